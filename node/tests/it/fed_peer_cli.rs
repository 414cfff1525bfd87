//! `voicechat peer add/list/remove/block --data-dir D` on a stopped node: a pin added this
//! way is dialed at the next start without any `--peer` flag (beta federates with alpha,
//! which pinned beta's id, printed by `voicechat id`), `peer remove` takes it off the list,
//! and a blocked node is refused.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn peers_added_offline_are_dialed_at_start() {
    let beta_plan = plan("beta");
    // `voicechat id` prints the PeerId an operator gives to the other one.
    let (ok, out, err) = run_cli(&["id", "--data-dir", beta_plan.dir_path()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), beta_plan.peer_id, "voicechat id prints the node's PeerId");
    let beta_id = beta_plan.peer_id.clone();
    let alpha = Node::start_peered_with(None, "alpha", &[], &["--peer", &format!("/p2p/{beta_id}")]);
    // beta runs once alone (no peers), then is stopped.
    let mut beta = Node::start_planned(beta_plan, &[], &[], &[]);
    let mut carol = registered_on(&beta, "carol").await;
    let st = beta.terminate();
    assert!(st.success(), "beta stopped cleanly: {st:?}");
    let dir = beta.data_dir().to_str().unwrap().to_owned();

    let (ok, out, err) = run_cli(&["peer", "list", "--data-dir", &dir]);
    assert!(ok, "peer list on a node without peers: {out}{err}");
    assert!(!out.contains("/ip4/"), "no peers yet, got: {out}");

    let (ok, out, err) = run_cli(&["peer", "add", &alpha.p2p, "--data-dir", &dir]);
    assert!(ok, "peer add failed:\n{out}\n{err}");
    let (ok, out, err) = run_cli(&["peer", "add", "not-a-multiaddr", "--data-dir", &dir]);
    assert!(!ok, "peer add accepted garbage:\n{out}\n{err}");
    assert!(!err.trim().is_empty(), "a refused peer add says why");
    let (ok, out, err) = run_cli(&["peer", "list", "--data-dir", &dir]);
    assert!(ok, "peer list failed: {err}");
    assert!(out.contains(&alpha.p2p) || out.contains(&alpha.peer_id()), "peer list shows alpha ({}): {out}", alpha.p2p);
    assert!(!out.contains("not-a-multiaddr"), "{out}");

    // Started again with no --peer: it dials alpha.
    beta.restart();
    wait_federated(&[&alpha, &beta]).await;
    let mut alice = registered_on(&alpha, "alice").await;
    let gid = create_group(&mut alice, "Dialed").await;
    let mut cws = Ws::connect(&carol).await;
    add_member(&mut alice, &gid, "carol@beta").await;
    accept_invitation(&mut carol, &gid).await;
    cws.next_matching_within("group event on beta", FED_WAIT, group_event(&gid, |g: &Value| g["home"] == "alpha")).await;

    // Removed while stopped: the list no longer has it.
    let st = beta.terminate();
    assert!(st.success(), "{st:?}");
    let (ok, out, err) = run_cli(&["peer", "remove", &alpha.p2p, "--data-dir", &dir]);
    assert!(ok, "peer remove failed:\n{out}\n{err}");
    let (ok, out, err) = run_cli(&["peer", "list", "--data-dir", &dir]);
    assert!(ok, "{err}");
    assert!(!out.contains(&alpha.p2p) && !out.contains(&alpha.peer_id()), "alpha still listed after remove: {out}");

    // Pinned again, and blocked: the block wins; beta refuses alpha.
    let (ok, _, err) = run_cli(&["peer", "add", &alpha.p2p, "--data-dir", &dir]);
    assert!(ok, "{err}");
    let (ok, out, err) = run_cli(&["peer", "block", &alpha.peer_id(), "--data-dir", &dir]);
    assert!(ok, "peer block failed:\n{out}\n{err}");
    let (ok, out, _) = run_cli(&["peer", "list", "--data-dir", &dir]);
    assert!(ok && out.contains(&format!("block\t{}", alpha.peer_id())), "{out}");
    beta.restart();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let t = metrics_text(&beta).await;
    assert_eq!(metric_sum(&t, "voicechat_federation_peers", &[]), 0.0, "beta keeps the blocked node out");
    let (ok, out, err) = run_cli(&["peer", "block", "not a name!", "--data-dir", &dir]);
    assert!(!ok && !err.trim().is_empty(), "a bad block is refused with a reason: {out}{err}");
}

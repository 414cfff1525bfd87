//! `voicechat peer block/unblock/add/remove` against a running node take effect at once
//! (through the admin socket), not at its next start: a blocked node's connection closes
//! and stays refused while the other keeps redialling; unblocked, it is back; a node pinned
//! while running is admitted when it dials (closed federation), and dropped when unpinned.

use crate::harness::*;

fn peers(t: &str) -> f64 {
    metric_sum(t, "voicechat_federation_peers", &[])
}

#[tokio::test]
async fn blocks_and_pins_apply_to_a_running_node() {
    let (alpha, beta) = fed_pair().await;
    let dir = alpha.data_dir().to_str().unwrap().to_owned();

    let (ok, out, err) = run_cli(&["peer", "block", &beta.peer_id(), "--data-dir", &dir]);
    assert!(ok, "peer block on a running node:\n{out}\n{err}");
    assert!(out.contains("closed now"), "says it applies now: {out}");
    wait_metrics(&alpha, "beta's connection closed by the block", |t| peers(t) == 0.0).await;
    // beta redials alpha (it has alpha's address); alpha keeps refusing it.
    wait_metrics(&beta, "beta refused by alpha", |t| peers(t) == 0.0).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(peers(&metrics_text(&alpha).await), 0.0, "a blocked node got back in");

    let (ok, out, err) = run_cli(&["peer", "unblock", &beta.peer_id(), "--data-dir", &dir]);
    assert!(ok, "peer unblock:\n{out}\n{err}");
    wait_metrics(&alpha, "beta back after the unblock", |t| peers(t) >= 1.0).await;

    // gamma dials alpha, which has not pinned it: refused (closed federation)…
    let gamma_plan = plan("gamma");
    let gamma_id = gamma_plan.peer_id.clone();
    let _gamma = Node::start_planned(gamma_plan, &[&alpha], &[], &[]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(peers(&metrics_text(&alpha).await), 1.0, "an unpinned node was admitted");
    // …until alpha's operator pins it, while alpha runs.
    let pin = format!("/p2p/{gamma_id}");
    let (ok, out, err) = run_cli(&["peer", "add", &pin, "--data-dir", &dir]);
    assert!(ok, "peer add on a running node:\n{out}\n{err}");
    assert!(out.contains("admits it now"), "{out}");
    wait_metrics(&alpha, "gamma admitted once pinned", |t| peers(t) >= 2.0).await;
    // Unpinned: dropped again.
    let (ok, out, err) = run_cli(&["peer", "remove", &pin, "--data-dir", &dir]);
    assert!(ok, "peer remove:\n{out}\n{err}");
    wait_metrics(&alpha, "gamma dropped once unpinned", |t| peers(t) == 1.0).await;
}

//! Admin while running: `voicechat user add` and `voicechat backup` talk to the running
//! node over its admin socket while two people are in a call; the backup restores into a
//! fresh data dir, and a node started from it has every user, group, room and its key.
//! Damaged or foreign backups and non-empty targets are refused without writing anything.

use std::path::Path;
use std::process::Output;

use serde_json::json;

use crate::harness::*;

fn show(o: &Output) -> String {
    format!("{:?}\nstdout: {}\nstderr: {}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn d(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A signal from one socket in the call to the other arrives: the call is alive.
async fn call_alive(from: &mut Ws, to: &mut Ws, to_user: &str, n: u32) {
    let data = json!({"sdp": format!("v=0 #{n}"), "type": "offer"});
    from.send(json!({"type": "signal", "to": to_user, "to_session": to.session, "kind": "offer", "data": data})).await;
    let s = to.next_of_type("signal").await;
    assert_eq!(s["data"], data, "{s}");
}

#[tokio::test]
async fn user_add_and_backup_while_serving_a_call_then_restore_everything() {
    let node = Node::start(&[]);
    let dir = node.data_dir().to_owned();
    let [mut alice, bob] = registered_all(&node, ["alice", "bob"]).await;
    let gid = create_group(&mut alice, "Ops").await;
    add_member(&mut alice, &gid, "bob").await;
    let rid = create_room(&mut alice, &gid, "Standup").await;
    let mut aws = Ws::connect(&alice).await;
    let mut bws = Ws::connect(&bob).await;
    for ws in [&mut aws, &mut bws] {
        ws.send(json!({"type": "join", "group": gid, "room": rid})).await;
        ws.next_of_type("joined").await;
    }
    call_alive(&mut aws, &mut bws, "bob@alpha", 1).await;
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("admin.sock")), 0o600, "only the node's user may administer it");

    // While the call runs: a new user, through the running node.
    let out = run_cli_stdin(&["user", "add", "carol", "--data-dir", d(&dir)], "carol-correct-horse-1\n");
    assert!(out.status.success(), "user add on a running node: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user carol"), "{}", show(&out));
    Client::new(&node).login("carol", "carol-correct-horse-1").await.expect(200);
    let out = run_cli_stdin(&["user", "add", "carol", "--data-dir", d(&dir)], "another-password-1\n");
    assert!(!out.status.success(), "a taken name is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"), "{}", show(&out));
    let out = run_cli_stdin(&["user", "list", "--data-dir", d(&dir)], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("carol\tactive"), "{}", show(&out));

    // A backup of the running node, still in the call.
    let bdir = tempfile::tempdir().unwrap();
    let file = bdir.path().join("node.vcbak");
    let out = run_cli_stdin(&["backup", d(&file), "--data-dir", d(&dir)], "");
    assert!(out.status.success(), "backup of a running node: {}", show(&out));
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600, "a backup holds the node key");
    call_alive(&mut bws, &mut aws, "alice@alpha", 2).await;
    assert!(node.is_running());

    // Refused without writing: a damaged file, a foreign file, a non-empty target.
    let mut damaged = std::fs::read(&file).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    std::fs::write(bdir.path().join("damaged"), &damaged).unwrap();
    std::fs::write(bdir.path().join("foreign"), b"PK\x03\x04 not ours").unwrap();
    for (bad, says) in [("damaged", "damaged"), ("foreign", "not a VoiceChat backup")] {
        let target = bdir.path().join(format!("from-{bad}"));
        let out = run_cli_stdin(&["restore", d(&bdir.path().join(bad)), "--data-dir", d(&target)], "");
        assert!(!out.status.success(), "{bad} restored: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{}", show(&out));
        assert!(!target.exists(), "nothing written for a {bad} backup");
    }
    let out = run_cli_stdin(&["restore", d(&file), "--data-dir", d(&dir)], "");
    assert!(!out.status.success(), "restore over a live data dir: {}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"), "{}", show(&out));

    // Restore into a fresh dir and start from it.
    let fresh = bdir.path().join("restored");
    let out = run_cli_stdin(&["restore", d(&file), "--data-dir", d(&fresh)], "");
    assert!(out.status.success(), "restore: {}", show(&out));
    #[cfg(unix)]
    assert_eq!(mode(&fresh.join("node.key")), 0o600);
    assert_eq!(std::fs::read(fresh.join("node.key")).unwrap(), std::fs::read(dir.join("node.key")).unwrap());
    let restored = Node::start_with(Some(&fresh), &[], &[]);
    for name in ["alice", "bob"] {
        Client::new(&restored).login(name, &pw(name)).await.expect(200);
    }
    Client::new(&restored).login("carol", "carol-correct-horse-1").await.expect(200);
    let mut a2 = Client::new(&restored);
    a2.login("alice", &pw("alice")).await.expect(200);
    let g = a2.get(&format!("/api/groups/{gid}")).await;
    g.expect(200);
    let text = g.body.to_string();
    assert!(text.contains("Ops") && text.contains("Standup") && text.contains("bob@alpha"), "{text}");

    // Stopped: the CLI falls back to the data dir.
    drop(restored);
    let out = run_cli_stdin(&["user", "list", "--data-dir", d(&fresh)], "");
    assert!(out.status.success(), "user list on a stopped node: {}", show(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for name in ["alice", "bob", "carol"] {
        assert!(listed.contains(name), "{listed}");
    }
}

/// `voicechat user disable` and `user passwd` against a running node sign that user's open
/// pages out at once (their sockets get `signed_out` and close), as the admin page does.
#[tokio::test]
async fn user_disable_over_the_admin_socket_signs_pages_out_at_once() {
    let node = Node::start(&[]);
    let [alice, bob] = registered_all(&node, ["alice", "bob"]).await;
    let dir = node.data_dir().to_path_buf();
    let mut bws = Ws::connect(&bob).await;
    let mut aws = Ws::connect(&alice).await;
    let out = run_cli_stdin(&["user", "disable", "bob", "--data-dir", d(&dir)], "");
    assert!(out.status.success(), "{}", show(&out));
    let last = bws.next_of_type("signed_out").await;
    assert_eq!(last["reason"], "account disabled", "{last}");
    assert!(bws.recv_any(std::time::Duration::from_secs(5)).await.is_err(), "bob's socket stays open after the disable");
    aws.expect_none_of_type("signed_out").await;

    let out = run_cli_stdin(&["user", "passwd", "alice", "--data-dir", d(&dir)], "a-brand-new-password-1\n");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(aws.next_of_type("signed_out").await["reason"], "password changed");
}

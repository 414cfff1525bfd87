//! The web client's end-to-end tests (`web-client/tests/`, real Chromium driven by
//! playwright-core against this crate's `voicechat` binary), run as part of
//! `cargo test --workspace`. A test binary of its own, so it runs after the other suites
//! instead of competing with them for the two cores.

use std::path::Path;
use std::process::Command;

#[test]
fn browser_end_to_end() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client");
    assert!(
        Path::new("/usr/bin/chromium").exists() || which("chromium"),
        "the browser tests need Chromium: apt-get install chromium (.ci/run installs it)"
    );
    // The tests' devDependencies (npm ci again when one was added since the last install).
    if ["playwright-core", "axe-core", "typescript"].iter().any(|m| !web.join("node_modules").join(m).exists()) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&web)
            .status()
            .expect("npm runs (Node.js 20+ is needed for the browser tests)");
        assert!(status.success(), "npm ci --prefix web-client failed");
    }
    let status = Command::new(web.join("tests/run.sh"))
        .env("VOICECHAT_BIN", env!("CARGO_BIN_EXE_voicechat"))
        .status()
        .expect("web-client/tests/run.sh starts");
    assert!(status.success(), "browser tests failed (their output is above)");
}

fn which(cmd: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success())
}

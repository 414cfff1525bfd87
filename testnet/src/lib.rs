//! VoiceChat testnet: starts N real `voicechat` processes, links them into a federation and
//! runs measuring scenarios against them (library API; the `testnet` binary is the CLI).

pub mod client;
pub mod net;
pub mod netns;
pub mod nodes;
pub mod presence;
pub mod rtc;
pub mod scenarios;
pub mod stats;

pub use net::{Options, Testnet};
pub use nodes::Topology;

/// Raises this process's open-file limit (children inherit it): the soft limit to the hard
/// one, and as root both to at least `want`. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let hard = if nix::unistd::geteuid().is_root() { hard.max(want) } else { hard };
    let soft = soft.max(want.min(hard));
    if setrlimit(Resource::RLIMIT_NOFILE, soft, hard).is_err() {
        // Not allowed to raise the hard limit (no CAP_SYS_RESOURCE): go as far as it.
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)?;
        return Ok(soft.min(hard));
    }
    Ok(soft)
}

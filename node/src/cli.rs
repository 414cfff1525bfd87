//! The command line: `voicechat [serve] [FLAGS]` runs the node; `voicechat user …`,
//! `peer …` and `backup` administer it (over its admin socket while it runs, else in its
//! data dir); `restore` and `doctor`.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::accounts::Hasher;
use crate::admin::{self, Request};
use crate::config::{self, TlsMode};
use crate::store::{Store, StoreError};

/// A self-hosted voice-room node. With no subcommand, runs `serve`.
#[derive(Debug, Parser)]
#[command(name = "voicechat", version, args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Logs go to stderr; set RUST_LOG (default: info), e.g. RUST_LOG=voicechat_node=debug."
)]
pub struct Cli {
    /// What to do; leaving it out runs `serve`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve` flags given without the word `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant, reason = "parsed once at start")]
pub enum Command {
    /// Run the node (the default).
    Serve(ServeArgs),
    /// Manage the nodes this node federates with (on the running node, or its data dir).
    Peer {
        /// Where the data lives.
        #[command(flatten)]
        dir: DirArgs,
        /// The action.
        #[command(subcommand)]
        action: PeerAction,
    },
    /// Print this node's PeerId (creating its key in the data dir if there is none), for
    /// other operators to pin.
    Id {
        /// Where the data lives.
        #[command(flatten)]
        dir: DirArgs,
    },
    /// Manage local accounts (on the running node, or its data dir when it is stopped).
    User {
        /// Where the data lives.
        #[command(flatten)]
        dir: DirArgs,
        /// The action.
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage admin HTTP API tokens (see node/API.md, "Admin API").
    Token {
        /// Where the data lives.
        #[command(flatten)]
        dir: DirArgs,
        /// The action.
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Write a consistent backup of the node (running or stopped) to FILE: store, node
    /// key, TURN secret, TLS material. Keep it as private as the data dir.
    Backup {
        /// Where the data lives.
        #[command(flatten)]
        dir: DirArgs,
        /// The backup file to write (mode 0600).
        file: PathBuf,
    },
    /// Restore a backup into a new, empty data dir (--data-dir), then start from it.
    Restore {
        /// The data dir to create.
        #[command(flatten)]
        dir: DirArgs,
        /// A file written by `voicechat backup`.
        file: PathBuf,
    },
    /// Check the configuration, certificate, ports and public URL; print what to fix.
    Doctor(ServeArgs),
}

/// Peer actions.
#[derive(Debug, Subcommand)]
pub enum PeerAction {
    /// Pin a node to federate with: a multiaddr ending in /p2p/PEER_ID (dialled), or
    /// /p2p/PEER_ID alone (admitted when it connects).
    Add {
        /// e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…
        addr: Multiaddr,
    },
    /// List the pins, blocks, and the nodes known from their signed cards.
    List,
    /// Forget a pin.
    Remove {
        /// The multiaddr as it was added.
        addr: Multiaddr,
    },
    /// Never federate with a node: by name or PeerId (its card is forgotten).
    Block {
        /// e.g. rogue.example.org or 12D3KooW…
        node: String,
    },
    /// Lift a block.
    Unblock {
        /// As it was blocked.
        node: String,
    },
}

/// Account actions; passwords are read from stdin (prompted without echo on a terminal).
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account; reads its password from stdin.
    Add {
        /// User name (3–32 of a-z 0-9 _ - .).
        name: String,
    },
    /// Set a new password (ends the user's sessions); reads it from stdin.
    Passwd {
        /// User name.
        name: String,
    },
    /// List accounts.
    List,
    /// Disable an account and end its sessions.
    Disable {
        /// User name.
        name: String,
    },
    /// Re-enable a disabled account.
    Enable {
        /// User name.
        name: String,
    },
}

/// Token actions.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token and print its secret (shown only now).
    Create {
        /// A name for people (unique), e.g. the bot's.
        name: String,
        /// What it may do: users, groups, rooms, invites (repeatable or comma-separated).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<crate::store::Scope>,
        /// The local user it acts as for groups, rooms and invites.
        #[arg(long)]
        user: Option<String>,
    },
    /// List tokens (names, scopes, users; never secrets).
    List,
    /// Revoke a token by name.
    Revoke {
        /// As created.
        name: String,
    },
}

/// Finding the data dir for admin commands.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Data directory of the node [default: ./voicechat-data, or data_dir from --config].
    #[arg(long, global = true, value_name = "DIR", env = "VOICECHAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file to read data_dir from.
    #[arg(long, global = true, value_name = "FILE", env = "VOICECHAT_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Everything `serve` accepts. Each flag has a `VOICECHAT_*` env twin and a field in the
/// config file; a flag beats its env twin, which beats the file.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML config file with the same settings (see config.dev.toml / config.prod.toml).
    #[arg(long, value_name = "FILE", env = "VOICECHAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for HTTP(S); port 0 picks a free one
    /// [default: 127.0.0.1:3001, or 0.0.0.0:443 with --tls acme].
    #[arg(long, value_name = "ADDR:PORT", env = "VOICECHAT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the store, node key and TLS material live [default: ./voicechat-data].
    #[arg(long, value_name = "DIR", env = "VOICECHAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's public name, part of every user id (alice@NAME); choose it before
    /// federating [default: localhost].
    #[arg(long, value_name = "NODE_NAME", env = "VOICECHAT_NAME")]
    pub name: Option<String>,
    /// Origin browsers use, e.g. https://voice.example.org behind a TLS proxy
    /// [default: from the listen address, https://DOMAIN with acme].
    #[arg(long, value_name = "URL", env = "VOICECHAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// libp2p listen multiaddr for federation with other nodes; the node also listens on
    /// its QUIC twin (/udp/PORT/quic-v1) [default: /ip4/0.0.0.0/tcp/4001].
    #[arg(long, value_name = "MULTIADDR", env = "VOICECHAT_P2P_LISTEN")]
    pub p2p_listen: Option<Multiaddr>,
    /// A node to federate with, pinned by its key: a multiaddr ending in /p2p/PEER_ID
    /// (kept dialled, with backoff), or /p2p/PEER_ID alone (admitted when it connects).
    /// Repeatable; env: comma-separated. `voicechat peer add` stores pins in the data dir
    /// instead [default: none].
    #[arg(long, value_name = "MULTIADDR", env = "VOICECHAT_PEER", value_delimiter = ',')]
    pub peer: Vec<Multiaddr>,
    /// Who may federate: closed (only pinned peers) or open (also nodes whose DNS name is
    /// verified over HTTPS, and, for names that are not DNS names, nodes trusted on first
    /// use) [default: closed].
    #[arg(long, value_enum, value_name = "MODE", env = "VOICECHAT_FEDERATION")]
    pub federation: Option<crate::federation::machine::Mode>,
    /// PEM file of a certificate authority to trust when verifying other nodes' names,
    /// besides the web roots (repeatable) [default: none].
    #[arg(long, value_name = "FILE", env = "VOICECHAT_FEDERATION_CA", value_delimiter = ',')]
    pub federation_ca: Vec<PathBuf>,
    /// Reach a node's HTTPS origin at this address instead of through DNS, as
    /// NAME=ADDR:PORT (repeatable) [default: DNS].
    #[arg(long, value_name = "NAME=ADDR:PORT", env = "VOICECHAT_FEDERATION_RESOLVE", value_delimiter = ',')]
    pub federation_resolve: Vec<String>,
    /// Seconds between checks of each group homed elsewhere against its home (a digest;
    /// records only when they differ) [default: 300].
    #[arg(long, value_name = "SECS", env = "VOICECHAT_RESYNC_SECS")]
    pub resync_secs: Option<u64>,
    /// Rooms with more sessions than this (or in a group whose calls hold more than four
    /// times this) show sockets outside their call only a count, not the list [default: 50].
    #[arg(long, value_name = "N", env = "VOICECHAT_ROOM_LIST_MAX")]
    pub room_list_max: Option<usize>,
    /// Another STUN/TURN server URL handed to browsers after the node's own (repeatable;
    /// env: comma-separated); TURN credentials go in the config file [default: none].
    #[arg(
        long,
        value_name = "URL",
        env = "VOICECHAT_ICE_SERVER",
        value_delimiter = ','
    )]
    pub ice_server: Vec<String>,
    /// TLS mode: none; files (PEM --cert/--key, chosen by itself when HTTPS_CERT and
    /// HTTPS_KEY are set); self-signed (generated once into DIR/tls/, for a LAN); acme
    /// (Let's Encrypt or --acme-directory, renewed by itself; cache in DIR/tls/acme)
    /// [default: none].
    #[arg(long, value_enum, value_name = "MODE", env = "VOICECHAT_TLS")]
    pub tls: Option<TlsMode>,
    /// PEM certificate chain for --tls files.
    #[arg(long, value_name = "FILE", env = "HTTPS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --tls files.
    #[arg(long, value_name = "FILE", env = "HTTPS_KEY")]
    pub key: Option<PathBuf>,
    /// Domain to get a certificate for with --tls acme (repeatable; the first one is the
    /// public URL). Its DNS must point here and port 443 must reach --listen.
    #[arg(
        long,
        value_name = "DOMAIN",
        env = "VOICECHAT_DOMAIN",
        value_delimiter = ','
    )]
    pub domain: Vec<String>,
    /// ACME account contact email (repeatable) for expiry notices [default: none].
    #[arg(
        long,
        value_name = "EMAIL",
        env = "VOICECHAT_ACME_CONTACT",
        value_delimiter = ','
    )]
    pub acme_contact: Vec<String>,
    /// Use Let's Encrypt's staging directory (untrusted test certificates) [default: false].
    #[arg(long, value_name = "BOOL", env = "VOICECHAT_ACME_STAGING",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub acme_staging: Option<bool>,
    /// ACME directory URL of another CA (private, or a test server) [default: Let's Encrypt].
    #[arg(long, value_name = "URL", env = "VOICECHAT_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// PEM file of a CA to trust for the ACME server's HTTPS [default: the web roots].
    #[arg(long, value_name = "FILE", env = "VOICECHAT_ACME_CA")]
    pub acme_ca: Option<PathBuf>,
    /// ACME challenge: tls-alpn-01 (on the listen port) or http-01 (on --acme-http-listen)
    /// [default: tls-alpn-01].
    #[arg(long, value_enum, value_name = "TYPE", env = "VOICECHAT_ACME_CHALLENGE")]
    pub acme_challenge: Option<crate::config::AcmeChallenge>,
    /// Plain HTTP address answering http-01 challenges and redirecting the rest to HTTPS
    /// [default: 0.0.0.0:80 with http-01].
    #[arg(long, value_name = "ADDR:PORT", env = "VOICECHAT_ACME_HTTP_LISTEN")]
    pub acme_http_listen: Option<SocketAddr>,
    /// The node's own STUN/TURN service for browsers: on or off [default: on].
    #[arg(long, value_enum, value_name = "ON|OFF", env = "VOICECHAT_TURN")]
    pub turn: Option<crate::config::Switch>,
    /// UDP and TCP address of STUN/TURN (one port number for both); port 0 picks one
    /// [default: the listen IP, port 3478 (0 when the listen port is 0); all interfaces
    /// when the listen IP is loopback but the public URL is not].
    #[arg(long, value_name = "ADDR:PORT", env = "VOICECHAT_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
    /// TURN over TLS (turns:) address, with the node's certificate [default: with TLS on,
    /// the TURN IP, port 5349 (0 when the listen port is 0); none without TLS].
    #[arg(long, value_name = "ADDR:PORT", env = "VOICECHAT_TURN_TLS_LISTEN")]
    pub turn_tls_listen: Option<SocketAddr>,
    /// The public address of a node behind 1:1 NAT (a cloud VM): put in TURN URLs and
    /// relayed candidates [default: the TURN listen IP, or the LAN address].
    #[arg(long, value_name = "IP", env = "VOICECHAT_TURN_EXTERNAL_IP")]
    pub turn_external_ip: Option<std::net::IpAddr>,
    /// UDP ports relays are opened on, LOW-HIGH [default: 49152-65535].
    #[arg(long, value_name = "LOW-HIGH", env = "VOICECHAT_TURN_RELAY_PORTS")]
    pub turn_relay_ports: Option<String>,
    /// A peer network relays may reach although it is refused by default (loopback,
    /// link-local, the node's own service ports), as a CIDR block (repeatable)
    /// [default: none].
    #[arg(long, value_name = "CIDR", env = "VOICECHAT_TURN_ALLOW_PEER", value_delimiter = ',')]
    pub turn_allow_peer: Vec<crate::turn::Cidr>,
    /// The node's audio forwarding unit (SFU) for big rooms and stages: on or off
    /// [default: on]. Off: every call is a mesh between browsers.
    #[arg(long, value_enum, value_name = "ON|OFF", env = "VOICECHAT_SFU")]
    pub sfu: Option<crate::config::Switch>,
    /// UDP address of the SFU, one port for every participant [default: the TURN IP (else
    /// the listen IP), port 3479 (0 when the listen port is 0)].
    #[arg(long, value_name = "ADDR:PORT", env = "VOICECHAT_SFU_LISTEN")]
    pub sfu_listen: Option<SocketAddr>,
    /// The address browsers send audio to, when the SFU listens on all interfaces or
    /// behind 1:1 NAT [default: --turn-external-ip, else the SFU listen IP, else the public
    /// URL's host].
    #[arg(long, value_name = "IP", env = "VOICECHAT_SFU_EXTERNAL_IP")]
    pub sfu_external_ip: Option<std::net::IpAddr>,
    /// A conversation room's call moves from mesh to the SFU when it reaches this many
    /// people [default: 5].
    #[arg(long, value_name = "N", env = "VOICECHAT_SFU_THRESHOLD")]
    pub sfu_threshold: Option<usize>,
    /// Browsers encrypt call audio end to end (SFrame, keys only they hold), so neither
    /// this node's audio server nor another node can hear it [default: on]. Off: audio is
    /// encrypted only between each browser and whatever forwards it, and pages say so.
    #[arg(long, value_enum, value_name = "ON|OFF", env = "VOICECHAT_E2EE")]
    pub e2ee: Option<crate::config::Switch>,
    /// Who may sign up until the administrator chooses on the admin page: open, invite-only
    /// (a group invite link is the ticket) or closed [default: open].
    #[arg(long, value_enum, value_name = "MODE", env = "VOICECHAT_REGISTRATION")]
    pub registration: Option<crate::store::RegistrationMode>,
    /// Password login and sign-up [default: on].
    #[arg(long, value_enum, value_name = "ON|OFF", env = "VOICECHAT_PASSWORD_LOGIN")]
    pub password_login: Option<crate::config::Switch>,
    /// Open WebSockets (tabs, devices) one user may hold [default: 8].
    #[arg(long, value_name = "N", env = "VOICECHAT_SOCKETS_PER_USER")]
    pub sockets_per_user: Option<usize>,
    /// Seats in calls one user may hold; a tab joining beyond it takes over the oldest,
    /// which says "moved to another tab" [default: 1]. Load tests raise it.
    #[arg(long, value_name = "N", env = "VOICECHAT_CALL_SEATS_PER_USER")]
    pub call_seats_per_user: Option<usize>,
    /// Sign-ups one client address may attempt per hour [default: 10].
    #[arg(long, value_name = "N", env = "VOICECHAT_REGISTRATIONS_PER_HOUR")]
    pub registrations_per_hour: Option<u32>,
    /// Seconds a page that lost its connection keeps its place in a call (its session) for
    /// resuming it; 0: it leaves at once [default: 20].
    #[arg(long, value_name = "SECS", env = "VOICECHAT_RESUME_GRACE")]
    pub resume_grace: Option<u64>,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => crate::serve::run(cli.serve).await,
        Some(Command::Serve(args)) => crate::serve::run(args).await,
        Some(Command::User { dir, action }) => user(dir, action).await,
        Some(Command::Peer { dir, action }) => peer(dir, action).await,
        Some(Command::Backup { dir, file }) => backup(dir, file).await,
        Some(Command::Token { dir, action }) => {
            let req = match action {
                TokenAction::Create { name, scopes, user } => Request::TokenCreate { name, scopes, user },
                TokenAction::List => Request::TokenList,
                TokenAction::Revoke { name } => Request::TokenRevoke { name },
            };
            print_output(&admin(&dir.resolve()?, req, false).await?.output);
            Ok(())
        }
        Some(Command::Restore { dir, file }) => restore(dir, file).await,
        Some(Command::Doctor(args)) => crate::doctor::run(args).await,
        Some(Command::Id { dir }) => {
            let data_dir = dir.resolve()?;
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
            let key = crate::node_key::load_or_create(&data_dir)?;
            let signer = crate::core::Signer::new(key.to_bytes());
            println!("{}", signer.node_key().peer_id());
            Ok(())
        }
    }
}

async fn peer(dir: DirArgs, action: PeerAction) -> anyhow::Result<()> {
    let req = match action {
        PeerAction::Add { addr } => Request::PeerAdd { addr: addr.to_string() },
        PeerAction::List => Request::PeerList,
        PeerAction::Remove { addr } => Request::PeerRemove { addr: addr.to_string() },
        PeerAction::Block { node } => Request::PeerBlock { node },
        PeerAction::Unblock { node } => Request::PeerUnblock { node },
    };
    let reply = admin(&dir.resolve()?, req, true).await?;
    print_output(&reply.output);
    Ok(())
}

/// Runs an admin operation: on the running node over its socket, or (when none runs)
/// on the data dir directly. `create` allows a data dir that does not exist yet.
async fn admin(data_dir: &Path, req: Request, create: bool) -> anyhow::Result<admin::Reply> {
    if let Some(result) = admin::call(data_dir, &req).await? {
        return result.map_err(|e| anyhow::anyhow!(e));
    }
    if !create && !data_dir.join("db").exists() {
        bail!("no node data in {}: check --data-dir", data_dir.display());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let store = open_store(data_dir)?;
    let ctx = admin::Ctx { store: store.clone(), data_dir: data_dir.to_owned(), hasher: Hasher::new(1), status: None, app: None };
    let result = admin::execute(&ctx, req).await;
    store.flush().await?;
    result.map_err(|e| anyhow::anyhow!(e))
}

fn print_output(text: &str) {
    if !text.is_empty() {
        println!("{text}");
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Turns a store-open failure into one line a person can act on.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    Store::open(data_dir).map_err(|e| match e {
        StoreError::Locked => {
            anyhow::anyhow!(
                "the data dir {} is in use by a running node: stop the node first, \
                 or point --data-dir at another directory",
                data_dir.display()
            )
        }
        e => anyhow::Error::new(e)
            .context(format!("cannot open the store in {}", data_dir.display())),
    })
}

impl DirArgs {
    /// The data dir: the flag, else the config file's, else the default.
    fn resolve(self) -> anyhow::Result<PathBuf> {
        let file_dir = match &self.config {
            Some(path) => config::load_file(path)?.data_dir,
            None => None,
        };
        Ok(self.data_dir.or(file_dir).unwrap_or_else(|| config::DEFAULT_DATA_DIR.into()))
    }
}

async fn user(dir: DirArgs, action: UserAction) -> anyhow::Result<()> {
    let data_dir = dir.resolve()?;
    let create = matches!(action, UserAction::Add { .. });
    let req = match action {
        UserAction::Add { name } => {
            let password = read_password(&format!("Password for {name}: "), true)?;
            Request::UserAdd { name, password }
        }
        UserAction::Passwd { name } => {
            let password = read_password(&format!("New password for {name}: "), true)?;
            Request::UserPasswd { name, password }
        }
        UserAction::List => Request::UserList,
        UserAction::Disable { name } => Request::UserDisable { name },
        UserAction::Enable { name } => Request::UserEnable { name },
    };
    let list = matches!(req, Request::UserList);
    let reply = admin(&data_dir, req, create).await?;
    if list && reply.output.is_empty() {
        eprintln!("no users yet");
    }
    print_output(&reply.output);
    Ok(())
}

/// `voicechat backup FILE`: written next to FILE first, then renamed, mode 0600.
async fn backup(dir: DirArgs, file: PathBuf) -> anyhow::Result<()> {
    let data_dir = dir.resolve()?;
    let reply = admin(&data_dir, Request::Backup, false).await?;
    let tmp = file.with_extension("partial");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&reply.data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    println!("{} into {}", reply.output, file.display());
    Ok(())
}

/// `voicechat restore FILE --data-dir NEW`.
async fn restore(dir: DirArgs, file: PathBuf) -> anyhow::Result<()> {
    let data_dir = dir.resolve()?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let b = crate::backup::Backup::decode(&bytes).with_context(|| format!("{} cannot be restored", file.display()))?;
    b.restore(&data_dir).await?;
    println!(
        "restored {} store entries and {} files into {}; start the node with --data-dir {}",
        b.store.len(),
        b.files.len(),
        data_dir.display(),
        data_dir.display()
    );
    Ok(())
}

/// One line from stdin; on a terminal, prompted without echo (and asked twice if `confirm`).
fn read_password(prompt: &str, confirm: bool) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password(prompt)?;
        if confirm && rpassword::prompt_password("Repeat it: ")? != pw {
            bail!("the passwords do not match");
        }
        return Ok(pw);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw).to_owned();
    if pw.is_empty() {
        bail!(
            "no password on stdin (pipe one line, e.g. `echo \"$PW\" | voicechat user add NAME`)"
        );
    }
    std::io::stderr().flush().ok();
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_with_flags() {
        let cli = Cli::try_parse_from(["voicechat", "--listen", "127.0.0.1:0", "--name", "alpha"])
            .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.name.as_deref(), Some("alpha"));
        let cli = Cli::try_parse_from(["voicechat", "serve", "--tls", "self-signed"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Serve(ServeArgs {
                tls: Some(TlsMode::SelfSigned),
                ..
            }))
        ));
    }

    #[test]
    fn user_commands_take_data_dir_anywhere() {
        let cli =
            Cli::try_parse_from(["voicechat", "user", "add", "bob", "--data-dir", "/d"]).unwrap();
        let Some(Command::User {
            dir,
            action: UserAction::Add { name },
        }) = cli.command
        else {
            panic!("not user add")
        };
        assert_eq!(
            (dir.data_dir.unwrap(), name.as_str()),
            (PathBuf::from("/d"), "bob")
        );
        let cli = Cli::try_parse_from(["voicechat", "user", "--data-dir", "/d", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::User {
                action: UserAction::List,
                ..
            })
        ));
    }

    #[test]
    fn repeatable_flags_and_staging_switch() {
        let cli = Cli::try_parse_from([
            "voicechat",
            "--ice-server",
            "stun:a",
            "--ice-server",
            "turn:b",
            "--domain",
            "x.org",
            "--acme-staging",
        ])
        .unwrap();
        assert_eq!(cli.serve.ice_server, ["stun:a", "turn:b"]);
        assert_eq!(cli.serve.acme_staging, Some(true));
        let cli = Cli::try_parse_from(["voicechat", "--acme-staging=false"]).unwrap();
        assert_eq!(cli.serve.acme_staging, Some(false));
    }

    #[test]
    fn clap_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}

//! `voicechat serve`: resolve the config, open the data dir, bind, announce the URL,
//! serve until SIGINT/SIGTERM, drain in-flight requests, flush the store.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::config::{self, Config, FileConfig, Tls};
use crate::{AppState, node_key, tls};

/// How long in-flight requests get to finish after a shutdown signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// Runs the node until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(&args, file)?;
    tls::install_crypto_provider();

    create_data_dir(&config.data_dir)?;
    let key = node_key::load_or_create(&config.data_dir)?;
    info!(public_key = %node_key::public_hex(&key), "node key");
    let store = crate::cli::open_store(&config.data_dir)?;

    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    // Only a node on all addresses needs its LAN address (self-signed SANs and origin).
    let lan_ip = if bound.ip().is_unspecified() {
        tls::lan_ip()
    } else {
        None
    };
    let settings = config.settings(bound, lan_ip);
    let url = settings.public_url.clone();

    let handle: Handle<SocketAddr> = Handle::new();
    let state = AppState::new(store.clone(), settings);
    let app = crate::app(state.clone())
        .into_make_service_with_connect_info::<SocketAddr>();

    // Build the TLS side before announcing, so a bad certificate fails startup.
    let server = match &config.tls {
        Tls::None => Served::Plain,
        Tls::Files { cert, key } => {
            Served::Rustls(RustlsConfig::from_config(tls::from_files(cert, key)?))
        }
        Tls::SelfSigned => {
            let sans = tls::self_signed_sans(
                config.name.as_str(),
                bound.ip(),
                lan_ip,
                tls::origin_host(&url),
            );
            let (cfg, fresh) = tls::self_signed(&config.data_dir, &sans)?;
            let dir = config.data_dir.join("tls");
            info!(?sans, dir = %dir.display(), fresh, "self-signed certificate");
            Served::Rustls(RustlsConfig::from_config(cfg))
        }
        Tls::Acme {
            domains,
            contact,
            staging,
        } => {
            let cache = config.data_dir.join("tls").join("acme");
            info!(?domains, staging, cache = %cache.display(), "acme");
            Served::Acme(tls::acme_acceptor(domains, contact, *staging, cache)?)
        }
    };

    info!(addr = %bound, tls = config.tls.mode_name(), "listening");
    if config.public_url.is_none() && bound.ip().is_unspecified() {
        info!(origin = %url, "only this origin may open WebSockets; see --public-url");
    }
    let mut peers = config.peers.clone();
    for text in store.dials()? {
        match text.parse() {
            Ok(addr) => peers.push(addr),
            Err(_) => warn!(addr = %text, "ignoring a stored peer that is not a multiaddr"),
        }
    }
    let fed = crate::federation::FedConfig {
        seed: key.to_bytes(),
        listen: vec![config.p2p_listen.clone()],
        peers,
    };
    let p2p = crate::federation::start(&state, fed)
        .await
        .with_context(|| format!("cannot start federation on {}", config.p2p_listen))?;
    let signals = Signals::register()?;
    tokio::spawn(shutdown_on_signal(signals, handle.clone(), state));
    announce(config.name.as_str(), &url)?;
    let tcp_first = p2p.iter().find(|a| a.to_string().contains("/tcp/")).or(p2p.first());
    if let Some(addr) = tcp_first {
        info!(%addr, "federation listening");
        let mut out = std::io::stdout().lock();
        writeln!(out, "VoiceChat node \"{}\" federates at {addr}", config.name)?;
        out.flush()?;
    }

    if let (Tls::Files { cert, key }, Served::Rustls(rc)) = (&config.tls, &server) {
        tokio::spawn(reload_on_sighup(rc.clone(), cert.clone(), key.clone()));
    }

    let served = match server {
        Served::Plain => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(app)
                .await
        }
        Served::Rustls(rc) => {
            axum_server::from_tcp_rustls(listener, rc)?
                .handle(handle)
                .serve(app)
                .await
        }
        Served::Acme(acceptor) => {
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(app)
                .await
        }
    };
    served.context("server failed")?;

    store.flush().await.context("cannot flush the store")?;
    info!("stopped");
    Ok(())
}

enum Served {
    Plain,
    Rustls(RustlsConfig),
    Acme(rustls_acme::axum::AxumAcceptor),
}

/// The one stdout line scripts and tests read the URL from.
fn announce(name: &str, url: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "VoiceChat node \"{name}\" is listening on {url}/")?;
    out.flush()?;
    Ok(())
}

/// Creates the data dir, private to this user when we create it.
fn create_data_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// SIGINT and SIGTERM, registered before the URL is announced so a signal sent right
/// after it is never missed.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// First SIGINT/SIGTERM: stop accepting and give requests [`GRACE`] to finish.
/// A second one: close everything now.
async fn shutdown_on_signal(mut signals: Signals, handle: Handle<SocketAddr>, state: AppState) {
    signals.next().await;
    info!(grace_secs = GRACE.as_secs(), "shutting down");
    handle.graceful_shutdown(Some(GRACE));
    // Long-lived sockets would hold the grace period open; end them now.
    state.shutdown();
    signals.next().await;
    warn!("second signal, closing connections now");
    handle.shutdown();
}

/// Re-reads the certificate files on SIGHUP (after a renewal), keeping the old ones if
/// the new ones do not load.
async fn reload_on_sighup(rc: RustlsConfig, cert: std::path::PathBuf, key: std::path::PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match tls::from_files(&cert, &key) {
                Ok(cfg) => {
                    rc.reload_from_config(cfg);
                    info!(cert = %cert.display(), "reloaded certificate");
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "certificate reload failed; keeping the old one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (rc, cert, key);
}

//! `voicechat serve`: resolve the config, open the data dir, bind, announce the URL,
//! serve until SIGINT/SIGTERM, drain in-flight requests, flush the store.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use axum_server::Handle;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tracing::{info, warn};

use crate::cli::ServeArgs;
use crate::config::{self, Config, FileConfig, Tls};
use crate::core::Core;
use crate::{AppState, node_key, tls};
use std::sync::Arc;

/// How long in-flight requests get to finish after a shutdown signal.
pub const GRACE: Duration = Duration::from_secs(5);

/// Runs the node until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(&args, file)?;
    // The metrics recorder first, so nothing recorded during start-up is lost.
    crate::metrics::handle();
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
    let signer = crate::core::Signer::new(key.to_bytes());
    let (announce_tx, announce_rx) = tokio::sync::mpsc::channel(crate::federation::ANNOUNCE_QUEUE);
    let core = Arc::new(
        Core::new(store.clone(), config.name.clone(), signer, Some(announce_tx)).with_room_list_max(config.room_list_max),
    );
    let signed = core.sign_missing_records().await.context("cannot sign the records of this node's groups")?;
    if signed > 0 {
        info!(groups = signed, "signed the records of groups stored before records were kept");
    }
    let mut extra_ca = Vec::new();
    for path in &config.federation.ca {
        extra_ca.push(std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?);
    }
    // The SFU first: federation drives its links to other nodes' SFUs (the cascade).
    let (links_tx, links_rx) = tokio::sync::mpsc::channel(256);
    let sfu = match &config.sfu {
        None => None,
        Some(sc) => Some(start_sfu(sc, &url, &core, links_tx).await?),
    };
    let fed_cfg = crate::federation::FedConfig {
        listen: vec![config.p2p_listen.clone()],
        pins: config.peers.clone(),
        blocks: Vec::new(),
        mode: config.federation.mode,
        url: url.clone(),
        resolve: config.federation.resolve.clone(),
        extra_ca,
        resync: config.federation.resync,
        limits: config.federation.limits,
        lan_ip: lan_ip.or_else(tls::lan_ip),
    };
    let fed = crate::federation::start(core.clone(), announce_rx, fed_cfg, sfu.clone().map(|s| (s, links_rx)))
        .await
        .with_context(|| format!("cannot start federation on {}", config.p2p_listen))?;
    let p2p = fed.addrs().to_vec();
    // Build the TLS side before announcing, so a bad certificate fails startup.
    let (server, tls_config) = match &config.tls {
        Tls::None => (Served::Plain, None),
        Tls::Files { cert, key } => {
            let cfg = tls::from_files(cert, key)?;
            (Served::Rustls(RustlsConfig::from_config(cfg.clone())), Some(cfg))
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
            (Served::Rustls(RustlsConfig::from_config(cfg.clone())), Some(cfg))
        }
        Tls::Acme { domains, contact, directory, ca, challenge, http_listen, .. } => {
            let cache = config.data_dir.join("tls").join("acme");
            info!(?domains, %directory, ?challenge, cache = %cache.display(), "acme");
            let acme = tls::acme(tls::AcmeSetup {
                domains,
                contact,
                directory,
                ca: ca.as_deref(),
                challenge: *challenge,
                cache_dir: cache,
            })?;
            if let Some(addr) = http_listen {
                start_acme_http(*addr, acme.http01.clone(), url.clone()).await?;
            }
            (Served::Acme(acme.acceptor), Some(acme.same_certs))
        }
    };

    // The SFU's port stays reachable through relays (for browsers that only get out over TCP).
    let sfu_ports: Vec<u16> = sfu.iter().map(|s| s.addr().port()).collect();
    // STUN/TURN, with the same certificate for turns: (swapped with it on SIGHUP).
    let turn_tls: Option<crate::turn::TlsSlot> = tls_config.map(|c| Arc::new(std::sync::RwLock::new(c)));
    let turn = match &config.turn {
        None => None,
        Some(tc) => {
            let secret = crate::turn::Secret::load_or_create(&config.data_dir)
                .with_context(|| format!("cannot read or create {}", config.data_dir.join("turn.secret").display()))?;
            let turn = crate::turn::Turn::start(tc, config.name.as_str(), tls::origin_host(&url), secret, turn_tls.clone(), &sfu_ports)
                .await
                .context("cannot start STUN/TURN (choose another address with --turn-listen, or --turn off)")?;
            Some(turn)
        }
    };
    core.set_sfu_threshold(config.sfu.as_ref().map(|s| s.threshold));
    let state = AppState::new(core, settings, Some(fed), turn, sfu);
    // The admin socket, so `voicechat user …` and `backup` work while the node runs.
    let status = crate::admin::Status {
        url: url.clone(),
        http: bound.to_string(),
        p2p: p2p.iter().map(ToString::to_string).collect(),
        turn: state.turn.as_ref().map(|t| t.addr().to_string()),
        sfu: state.sfu.as_ref().map(|s| s.addr().to_string()),
        tls: config.tls.mode_name().to_owned(),
    };
    // Without it (a data dir path too long for a socket name) the node still serves;
    // admin commands then need it stopped.
    if let Err(e) = crate::admin::serve(crate::admin::Ctx {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        hasher: crate::accounts::Hasher::new(1),
        status: Some(status),
        app: Some(state.clone()),
    }) {
        warn!(error = %format!("{e:#}"), "no admin socket; `voicechat user …` needs the node stopped");
    }
    tokio::spawn(sweep_sessions(store.clone()));
    tokio::spawn(tick_counts(state.core.clone()));
    let app = crate::app(state.clone())
        .into_make_service_with_connect_info::<SocketAddr>();

    info!(addr = %bound, tls = config.tls.mode_name(), "listening");
    if config.public_url.is_none() && bound.ip().is_unspecified() {
        info!(origin = %url, "only this origin may open WebSockets; see --public-url");
    }
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
        tokio::spawn(reload_on_sighup(rc.clone(), turn_tls.clone(), cert.clone(), key.clone()));
    }

    let served = match server {
        Served::Plain => {
            axum_server::from_tcp(listener)?
                .acceptor(NoDelay(DefaultAcceptor))
                .handle(handle)
                .serve(app)
                .await
        }
        Served::Rustls(rc) => {
            axum_server::from_tcp(listener)?
                .acceptor(NoDelay(RustlsAcceptor::new(rc)))
                .handle(handle)
                .serve(app)
                .await
        }
        Served::Acme(acceptor) => {
            axum_server::from_tcp(listener)?
                .acceptor(NoDelay(acceptor))
                .handle(handle)
                .serve(app)
                .await
        }
    };
    served.context("server failed")?;

    let _ = std::fs::remove_file(crate::admin::socket_path(&config.data_dir));
    store.flush().await.context("cannot flush the store")?;
    info!("stopped");
    Ok(())
}

/// How often expired login sessions are purged.
const SESSION_SWEEP: Duration = Duration::from_secs(600);

/// Purges expired login sessions at start and every [`SESSION_SWEEP`].
async fn sweep_sessions(store: crate::store::Store) {
    let mut tick = tokio::time::interval(SESSION_SWEEP);
    loop {
        tick.tick().await;
        match store.purge_sessions(crate::time::unix_now()).await {
            Ok(0) => {}
            Ok(n) => info!(n, "purged expired sessions"),
            Err(e) => warn!(%e, "could not purge expired sessions"),
        }
    }
}

/// Sends the counts of big rooms to the sockets that see only counts, at most once per
/// [`crate::rooms::COUNT_EVERY`] per room.
async fn tick_counts(core: Arc<Core>) {
    let mut tick = tokio::time::interval(crate::rooms::COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.tick_counts();
    }
}

/// Sets `TCP_NODELAY` on every accepted connection, then hands it to the inner acceptor.
/// Socket messages are small and each one matters on its own: without it, Nagle's
/// algorithm holds a message back until the browser acknowledges the previous one, which
/// under delayed ACKs costs a signal one whole send interval (~20 ms at 50/s).
#[derive(Clone)]
struct NoDelay<A>(A);

impl<A, S> Accept<tokio::net::TcpStream, S> for NoDelay<A>
where
    A: Accept<tokio::net::TcpStream, S>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = A::Future;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%e, "could not set TCP_NODELAY");
        }
        self.0.accept(stream, service)
    }
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

/// Re-reads the certificate files on SIGHUP (after a renewal), for HTTPS and TURN over
/// TLS, keeping the old ones if the new ones do not load.
async fn reload_on_sighup(
    rc: RustlsConfig,
    turn: Option<crate::turn::TlsSlot>,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match tls::from_files(&cert, &key) {
                Ok(cfg) => {
                    if let Some(slot) = &turn {
                        *slot.write().expect("tls slot") = cfg.clone();
                    }
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
    let _ = (rc, turn, cert, key);
}

/// The plain HTTP listener beside an ACME node: answers http-01 challenges and sends
/// every other request to the same path on the HTTPS origin.
async fn start_acme_http(
    addr: SocketAddr,
    http01: Option<rustls_acme::tower::TowerHttp01ChallengeService>,
    origin: String,
) -> anyhow::Result<()> {
    use axum::response::{IntoResponse, Redirect};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for ACME http-01 (choose another with --acme-http-listen)"))?;
    let redirect = move |uri: axum::http::Uri| async move {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Redirect::permanent(&format!("{origin}{path}")).into_response()
    };
    let mut app = axum::Router::new().fallback(redirect);
    if let Some(svc) = http01 {
        app = app.route_service("/.well-known/acme-challenge/{token}", svc);
    }
    info!(addr = %listener.local_addr()?, "ACME http-01 listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(%e, "ACME http-01 listener stopped");
        }
    });
    Ok(())
}

/// Starts the audio forwarding unit; what it says goes to the sockets of the people it
/// concerns.
async fn start_sfu(
    sc: &crate::config::SfuConfig,
    url: &str,
    core: &Arc<crate::core::Core>,
    links: tokio::sync::mpsc::Sender<(crate::sfu::LinkKey, bool)>,
) -> anyhow::Result<crate::sfu::Sfu> {
    let announce = match sc.external_ip {
        Some(ip) => Some(ip),
        None if !sc.listen.ip().is_unspecified() => None,
        // On every interface: browsers are told the public URL's address.
        None => {
            let host = tls::origin_host(url).unwrap_or("localhost").to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await.ok().and_then(|mut a| a.next()).map(|a| a.ip());
            Some(found.with_context(|| format!("the SFU listens on every interface and {host} does not resolve: set --sfu-external-ip"))?)
        }
    };
    let settings = crate::sfu::SfuSettings { listen: sc.listen, announce, speakers: sc.speakers, max_peers: sc.max_peers };
    let hub_core = core.clone();
    let events = Arc::new(move |e: crate::sfu::SfuEvent| match e {
        crate::sfu::SfuEvent::Link { room, node, up } => {
            // Federation plans the links; a full queue loses a report, which the plan's
            // open timeout makes good.
            let _ = links.try_send(((room, node), up));
        }
        e => crate::ws::sfu_event(&hub_core, e),
    });
    let sfu = crate::sfu::Sfu::start(settings, events)
        .await
        .with_context(|| format!("cannot start the SFU on {} (choose another with --sfu-listen, or --sfu off)", sc.listen))?;
    info!(addr = %sfu.addr(), "SFU listening");
    Ok(sfu)
}

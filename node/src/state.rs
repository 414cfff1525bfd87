//! What every request handler and socket sees: the domain core, the federation handle (if
//! the node federates), deployment settings, the login limiter and the password hasher.

use std::sync::{Arc, Mutex};

use voicechat_protocol::ids::{NodeName, UserId, UserName};

use crate::accounts::Hasher;
use crate::core::{Core, Effects};
use crate::federation::Federation;
use crate::ratelimit::LoginLimiter;
use crate::store::{RegistrationMode, Store};

/// What the node needs to know about how it is deployed. Built by `config`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's public name; local users are `name@node_name`.
    pub node_name: NodeName,
    /// The origin browsers use to reach this node, e.g. `https://voice.example.org`,
    /// without a trailing slash. WebSocket upgrades from other origins are refused and
    /// invite links are built from it.
    pub public_url: String,
    /// Mark cookies `Secure` (TLS is on, or the node sits behind an HTTPS proxy).
    pub secure_cookies: bool,
    /// The operator's STUN/TURN servers, handed to browsers after the node's own, as
    /// `RTCIceServer` JSON objects.
    pub ice_servers: Vec<serde_json::Value>,
    /// At most this many password hashes run at once.
    pub max_concurrent_hashes: usize,
    /// Browsers encrypt call audio end to end (told to pages with the ICE configuration).
    pub e2ee: bool,
    /// Limits on accounts; see [`Limits`].
    pub limits: Limits,
    /// Who may sign up when no administrator chose (the admin page's choice is stored and
    /// wins).
    pub registration: RegistrationMode,
    /// Password login (and sign-up with a password) is offered.
    pub password_login: bool,
    /// OpenID Connect providers people may sign in with.
    pub oidc: Vec<crate::oidc::ProviderConfig>,
}

/// Limits on what one account or one address may do. The defaults suit a real node; load
/// tests that drive many sockets of few users from one address raise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open WebSockets per user (tabs, devices).
    pub sockets_per_user: usize,
    /// Seats in calls per user; a socket joining beyond it takes over the oldest seat.
    pub call_seats_per_user: usize,
    /// Sign-ups one client address may attempt per hour (allowed by the mode; a taken name
    /// counts too).
    pub registrations_per_hour: u32,
    /// How long a socket that dropped without a goodbye keeps its session (its seat in a
    /// call, its queue) for the page to resume it; zero: not at all.
    pub resume_grace: std::time::Duration,
}

/// Default [`Limits::sockets_per_user`].
pub const DEFAULT_SOCKETS_PER_USER: usize = 8;
/// Default [`Limits::call_seats_per_user`].
pub const DEFAULT_CALL_SEATS_PER_USER: usize = 1;
/// Default [`Limits::registrations_per_hour`].
pub const DEFAULT_REGISTRATIONS_PER_HOUR: u32 = 10;
/// Default [`Limits::resume_grace`]: long enough for a reconnect after a blip or a
/// restart of the node, short enough that someone who is gone soon shows as gone.
pub const DEFAULT_RESUME_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

impl Default for Limits {
    fn default() -> Self {
        Self {
            sockets_per_user: DEFAULT_SOCKETS_PER_USER,
            call_seats_per_user: DEFAULT_CALL_SEATS_PER_USER,
            registrations_per_hour: DEFAULT_REGISTRATIONS_PER_HOUR,
            resume_grace: DEFAULT_RESUME_GRACE,
        }
    }
}

impl Settings {
    /// Defaults for a node called `name` reachable at `public_url`; used by tests.
    pub fn new(node_name: NodeName, public_url: impl Into<String>) -> Self {
        Self {
            node_name,
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            secure_cookies: false,
            ice_servers: Vec::new(),
            max_concurrent_hashes: 4,
            e2ee: true,
            limits: Limits::default(),
            registration: RegistrationMode::Open,
            password_login: true,
            oidc: Vec::new(),
        }
    }
}

/// Cheap to clone; everything inside is shared.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// The domain core.
    pub core: Arc<Core>,
    /// Durable state (the core's store), for accounts and sessions.
    pub store: Store,
    /// Deployment settings.
    pub settings: Settings,
    /// Failed-login counters (password changes count here too).
    pub limiter: Mutex<LoginLimiter>,
    /// OpenID Connect sign-in: providers and flows under way.
    pub oidc: crate::oidc::Oidc,
    /// Sign-ups per client address.
    pub signups: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// argon2id with a concurrency cap.
    pub hasher: Hasher,
    /// Set once when the node shuts down; open sockets watch it and close.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The federation, if this node federates.
    fed: Option<Federation>,
    /// The node's STUN/TURN service, unless it is turned off.
    pub turn: Option<crate::turn::Turn>,
    /// The audio forwarding unit, unless it is turned off.
    pub sfu: Option<crate::sfu::Sfu>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state of a node over `core`, federating through `fed` and relaying calls
    /// through `turn` and forwarding audio through `sfu` if given.
    pub fn new(core: Arc<Core>, settings: Settings, fed: Option<Federation>, turn: Option<crate::turn::Turn>, sfu: Option<crate::sfu::Sfu>) -> Self {
        let hasher = Hasher::new(settings.max_concurrent_hashes);
        Self(Arc::new(Inner {
            store: core.store.clone(),
            core,
            limiter: Mutex::new(LoginLimiter::default()),
            oidc: crate::oidc::Oidc::new(settings.oidc.clone(), &settings.public_url),
            signups: governor::RateLimiter::keyed(governor::Quota::per_hour(
                std::num::NonZeroU32::new(settings.limits.registrations_per_hour.max(1)).expect("at least 1"),
            )),
            hasher,
            settings,
            shutdown: tokio::sync::watch::Sender::new(false),
            fed,
            turn,
            sfu,
        }))
    }

    /// The federation, if this node joined the network.
    pub fn fed(&self) -> Option<&Federation> {
        self.fed.as_ref()
    }

    /// Carries out an operation's effects: sockets told now, other nodes told through
    /// federation.
    pub async fn commit(&self, fx: Effects) {
        if let Some(sfu) = &self.sfu {
            sfu.apply(&fx);
        }
        self.core.commit(fx).await;
    }

    /// Tells every open socket to close.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`AppState::shutdown`] was called (at once if it already was).
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|down| *down).await;
        }
    }

    /// The full id of a local user.
    pub fn local_user(&self, name: &UserName) -> UserId {
        UserId::new(name.clone(), self.settings.node_name.clone())
    }
}

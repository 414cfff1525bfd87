//! Verifying a node name the way Matrix discovers servers: fetch
//! `https://NAME/.well-known/voicechat/node` under a certificate that verifies for NAME
//! (the system's web roots, plus any authority the operator added) and take the signed
//! card it serves. Redirects are not followed and the body is capped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use voicechat_protocol::ids::NodeName;

/// The path every node serves its card at.
pub const PATH: &str = "/.well-known/voicechat/node";
/// Largest card body accepted.
const MAX_BODY: usize = 16 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTPS client for cards. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    client: reqwest::Client,
    ports: Arc<HashMap<NodeName, u16>>,
}

impl Verifier {
    /// A client that reaches `resolve`d names at the given addresses (else DNS) and trusts
    /// the PEM authorities in `extra_ca` besides the web roots.
    pub fn new(resolve: &HashMap<NodeName, SocketAddr>, extra_ca: &[Vec<u8>]) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(concat!("voicechat/", env!("CARGO_PKG_VERSION")))
            .https_only(true);
        for pem in extra_ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("extra CA: {e}"))? {
                b = b.add_root_certificate(cert);
            }
        }
        let mut ports = HashMap::new();
        for (name, addr) in resolve {
            b = b.resolve(name.as_str(), *addr);
            ports.insert(name.clone(), addr.port());
        }
        let client = b.build().map_err(|e| format!("HTTPS client: {e}"))?;
        Ok(Self { client, ports: Arc::new(ports) })
    }

    /// The card `name` serves, as bytes (judged by the machine).
    pub async fn fetch(&self, name: &NodeName) -> Result<Vec<u8>, String> {
        let url = match self.ports.get(name) {
            Some(port) => format!("https://{name}:{port}{PATH}"),
            None => format!("https://{name}{PATH}"),
        };
        let mut resp = self.client.get(&url).send().await.map_err(|e| format!("{url}: {}", chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let too_big = || format!("{url} sent more than {MAX_BODY} bytes");
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(too_big());
            }
        }
        Ok(body)
    }
}

/// An error with its causes, on one line (the certificate error is usually a cause).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

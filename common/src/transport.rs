//! Client channels to a coordinator: plain `http://`, or `https://` with TLS
//! (rustls) verified against the system roots or a given CA (`--ca`).

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::{CartoError, Result};

/// HTTP/2 pings on an open connection, and how long one may go unanswered.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint for `url`; TLS when the scheme is https.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| CartoError::invalid(format!("--coordinator {url}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A coordinator that vanishes (host down, network cut) is noticed in
        // about 40 s, not after the kernel's ~15 min of TCP retries.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(60)));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| CartoError::invalid(format!("--ca {}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(|e| CartoError::invalid(format!("--coordinator {url}: TLS: {e}")))?;
    } else if ca.is_some() {
        return Err(CartoError::invalid(format!("--ca is for https:// coordinators, not {url}")));
    }
    Ok(ep)
}

//! Serving the coordinator: the carto services plus the standard gRPC health
//! and reflection services on one port, so grpcurl and grpcio clients work
//! without our protos. Used by `carto serve`, by `carto run` (in-process, on
//! 127.0.0.1:0) and by tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_server::JobServiceServer;
use carto_common::proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use tonic::service::interceptor::InterceptedService;

use crate::auth::RequireToken;
use crate::coordinator::{spawn_monitor, Coordinator};
use crate::service::{JobApi, WorkerApi};

/// Largest message the server accepts: one chunk plus headroom for its header.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// HTTP/2 pings on idle connections, the same as clients send: a peer that
/// does not answer within [`KEEPALIVE_TIMEOUT`] is dropped, so half-open
/// connections do not pile up.
pub use carto_common::transport::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
/// TCP keepalive on accepted sockets.
pub const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// Who may call, and over what.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Required on JobService calls (users).
    pub user_token: Option<String>,
    /// Required on WorkerService calls (workers).
    pub worker_token: Option<String>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Security {
    /// Fails on an empty token (never a way to turn authentication off).
    pub fn validate(&self) -> anyhow::Result<()> {
        for (t, what) in [(&self.user_token, "the user token"), (&self.worker_token, "the worker token")] {
            if let Some(t) = t {
                crate::auth::check_token(t, what)?;
            }
        }
        Ok(())
    }

    /// Both services require a token: the condition for serving a
    /// non-loopback address without `--insecure`.
    pub fn fully_authenticated(&self) -> bool {
        self.user_token.is_some() && self.worker_token.is_some()
    }
}

/// The transport settings `serve` applies to the tonic server, from the
/// coordinator's config (exposed so tests can check the wiring).
#[derive(Debug, Clone, PartialEq)]
pub struct Transport {
    pub max_concurrent_streams: u32,
    pub http2_keepalive_interval: std::time::Duration,
    pub http2_keepalive_timeout: std::time::Duration,
    pub tcp_keepalive: std::time::Duration,
}

impl Transport {
    pub fn from_config(config: &crate::config::CoordinatorConfig) -> Self {
        Transport {
            max_concurrent_streams: config.limits.max_streams_per_connection,
            http2_keepalive_interval: KEEPALIVE_INTERVAL,
            http2_keepalive_timeout: KEEPALIVE_TIMEOUT,
            tcp_keepalive: TCP_KEEPALIVE,
        }
    }
}

/// Serves `coord` on `listener` until `shutdown` resolves. With tokens,
/// every call but health must carry the right one (reflection: the users').
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    security.validate()?;
    let transport = Transport::from_config(coord.config());
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<JobServiceServer<JobApi>>().await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    // v1 and v1alpha: grpcio-reflection and older grpcurl ask for v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let monitor = spawn_monitor(coord.clone());
    // Open order streams would keep a graceful shutdown waiting forever.
    let closer = coord.clone();
    let shutdown = async move {
        shutdown.await;
        closer.close_worker_streams(None);
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &security.tls {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)))?;
    }
    let result = builder
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(transport.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(transport.http2_keepalive_timeout))
        .max_concurrent_streams(Some(transport.max_concurrent_streams))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, RequireToken::new(security.user_token.as_deref())))
        .add_service(InterceptedService::new(reflection_v1alpha, RequireToken::new(security.user_token.as_deref())))
        .add_service(InterceptedService::new(
            JobServiceServer::new(JobApi(coord.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES),
            RequireToken::new(security.user_token.as_deref()),
        ))
        .add_service(InterceptedService::new(
            WorkerServiceServer::new(WorkerApi(coord)).max_decoding_message_size(MAX_MESSAGE_BYTES),
            RequireToken::new(security.worker_token.as_deref()),
        ))
        // `tcp_nodelay` above applies only to listeners tonic binds itself:
        // without it here, Nagle holds each small reply for the client's
        // delayed ACK, 40 ms on every status call (the load test's floor).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(transport.tcp_keepalive)),
            shutdown,
        )
        .await;
    monitor.abort();
    Ok(result?)
}

/// A coordinator serving in the background of this process.
pub struct Embedded {
    pub coord: Arc<Coordinator>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Embedded {
    /// Binds `addr` (use 127.0.0.1:0 for a free port) and serves in a task.
    pub async fn start(coord: Arc<Coordinator>, addr: &str) -> anyhow::Result<Embedded> {
        Self::start_with(coord, addr, Security::default()).await
    }

    /// Like [`Embedded::start`], with tokens or TLS.
    pub async fn start_with(coord: Arc<Coordinator>, addr: &str, security: Security) -> anyhow::Result<Embedded> {
        security.validate()?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(coord.clone(), listener, security, async {
            let _ = stopped.await;
        }));
        Ok(Embedded { coord, addr, stop: Some(stop), task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: workers are told to exit, open streams end, and
    /// in-flight calls get a few seconds to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.coord.close_worker_streams(Some("the coordinator is shutting down"));
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task).await {
            Ok(r) => r?,
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_config() {
        let mut config = crate::config::CoordinatorConfig::default();
        config.limits.max_streams_per_connection = 7;
        let t = Transport::from_config(&config);
        assert_eq!(t.max_concurrent_streams, 7);
        assert_eq!(t.http2_keepalive_interval, KEEPALIVE_INTERVAL);
        assert_eq!(t.http2_keepalive_timeout, KEEPALIVE_TIMEOUT);
        assert_eq!(t.tcp_keepalive, TCP_KEEPALIVE);
    }

    #[test]
    fn empty_tokens_are_refused() {
        let s = Security { user_token: Some(String::new()), ..Default::default() };
        assert!(s.validate().is_err());
        let s = Security { worker_token: Some("CHANGE-ME-use-openssl-rand-hex-32".into()), ..Default::default() };
        assert!(s.validate().is_err());
        let s = Security { user_token: Some("a".into()), worker_token: Some("b".into()), tls: None };
        assert!(s.validate().is_ok());
        assert!(s.fully_authenticated());
        assert!(!Security { user_token: Some("a".into()), ..Default::default() }.fully_authenticated());
    }
}

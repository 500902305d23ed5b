//! The live page of `carto serve --http ADDR` and `carto run --ui`: a list of
//! jobs with their progress and each job's data map, redrawn after every
//! committed epoch.
//!
//! The HTTP side is a gateway over [`JobService`]: every request becomes the
//! same call a gRPC user would make (ListJobs, GetJob, GetDataMap), through
//! the same token check ([`RequireToken`]), so the page sees exactly what the
//! gRPC side exposes to a user. The browser sends the token as
//! `Authorization: Bearer …` (the page takes it from a login form or from the
//! URL's fragment, which never reaches a server); requests are logged by
//! method and path only.
//!
//! Routes: `/` (the page), `/live.js` (its code, bundled from web/src/live.js),
//! `/api/jobs`, `/api/jobs/{id}`, `/api/jobs/{id}/map[?texts=1]`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_server::JobService;
use tokio::net::TcpListener;
use tonic::service::Interceptor;

use crate::auth::RequireToken;
use crate::coordinator::Coordinator;
use crate::service::JobApi;

/// The live page's code (web/src/live.js, bundled by build.rs).
const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/live.js"));

/// The first bytes of a map response (see [`map_frame`]).
pub const MAP_MAGIC: &[u8; 4] = b"CMAP";

/// regl compiles its shaders' drawing code at run time (`unsafe-eval`) and
/// regl-scatterplot indexes large point sets in a worker made from a blob;
/// the page loads nothing from anywhere else.
const CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-eval'; worker-src blob:; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Gateway {
    api: Arc<JobApi>,
    auth: RequireToken,
    /// Without a user token on a loopback address, only loopback host names
    /// are answered: another site's page cannot rebind its name to 127.0.0.1
    /// and read the jobs.
    loopback_hosts_only: bool,
}

/// A gRPC status as an HTTP reply: the same code family and the same one line.
fn status_response(s: tonic::Status) -> Response {
    use tonic::Code;
    let code = match s.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(code, &serde_json::json!({ "error": s.message() }))
}

fn json_response(code: StatusCode, v: &serde_json::Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

impl Gateway {
    /// The gRPC request a user would send: the browser's token as metadata,
    /// checked by the same interceptor as the gRPC port's.
    fn request<T>(&self, headers: &HeaderMap, message: T) -> Result<tonic::Request<T>, Response> {
        if self.loopback_hosts_only && !headers.get(header::HOST).and_then(|h| h.to_str().ok()).is_some_and(is_loopback_host) {
            return Err(json_response(StatusCode::FORBIDDEN, &serde_json::json!({ "error": "this page answers only at a loopback address (localhost, 127.0.0.1, [::1])" })));
        }
        let mut req = tonic::Request::new(());
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let v = tonic::metadata::MetadataValue::try_from(v.as_bytes())
                .map_err(|_| status_response(tonic::Status::unauthenticated("the token holds characters not allowed in a header")))?;
            req.metadata_mut().insert("authorization", v);
        }
        let req = self.auth.clone().call(req).map_err(status_response)?;
        let (metadata, extensions, ()) = req.into_parts();
        Ok(tonic::Request::from_parts(metadata, extensions, message))
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn index() -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>carto — jobs</title>{style}</head><body class=\"live\">{body}<script src=\"/live.js\"></script></body></html>\n",
        style = crate::datamap_html::STYLE,
        body = LIVE_BODY.replace("<!--MAP-->", crate::datamap_html::BODY),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], html).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn jobs(State(g): State<Gateway>, headers: HeaderMap) -> Response {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = match g.request(&headers, pb::ListJobsRequest { page_size: 0, page_token: page_token.clone() }) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        match g.api.list_jobs(req).await {
            Ok(r) => {
                let r = r.into_inner();
                all.extend(r.jobs.iter().map(crate::remote::job_json));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            Err(s) => return status_response(s),
        }
    }
    json_response(StatusCode::OK, &serde_json::json!({ "jobs": all }))
}

async fn job(State(g): State<Gateway>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let req = match g.request(&headers, pb::GetJobRequest { job_id: id }) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match g.api.get_job(req).await {
        Ok(j) => json_response(StatusCode::OK, &crate::remote::job_json(j.get_ref())),
        Err(s) => status_response(s),
    }
}

#[derive(serde::Deserialize)]
struct MapQuery {
    #[serde(default)]
    texts: Option<u8>,
}

async fn map(State(g): State<Gateway>, Path(id): Path<String>, Query(q): Query<MapQuery>, headers: HeaderMap) -> Response {
    let with_texts = q.texts.unwrap_or(0) != 0;
    let req = match g.request(&headers, pb::GetDataMapRequest { job_id: id, with_texts }) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match g.api.get_data_map(req).await {
        Ok(m) => ([(header::CONTENT_TYPE, "application/octet-stream")], map_frame(m.get_ref())).into_response(),
        Err(s) => status_response(s),
    }
}

/// A map as the page reads it: `CMAP`, the metadata's length (u32, little
/// endian), the metadata (JSON, with `texts` and `ids`), zeros to a multiple
/// of 4, then the column buffer of [`crate::datamap_html::encode`].
pub fn map_frame(map: &pb::DataMap) -> Vec<u8> {
    let (mut meta, buf) = crate::datamap_html::encode(map);
    meta["texts"] = serde_json::json!(map.texts);
    meta["ids"] = serde_json::json!(map.ids);
    let meta = meta.to_string().into_bytes();
    let mut out = Vec::with_capacity(12 + meta.len() + buf.len());
    out.extend_from_slice(MAP_MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&buf);
    out
}

/// No caching, no sniffing, no referrer (the page's address may hold a token
/// in its fragment; browsers never send fragments, and this keeps the rest in).
async fn common_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "http");
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The page's router, answering for `coord` with `user_token` (the
/// coordinator's JobService token; `None`: open). `loopback` says the
/// listener is on a loopback address.
pub fn router(coord: Arc<Coordinator>, user_token: Option<&str>, loopback: bool) -> Router {
    let g = Gateway {
        api: Arc::new(JobApi(coord)),
        auth: RequireToken::new(user_token),
        loopback_hosts_only: loopback && user_token.is_none(),
    };
    Router::new()
        .route("/", get(index))
        .route("/live.js", get(script))
        // Browsers ask; the page has none.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/map", get(map))
        .layer(axum::middleware::from_fn(common_headers))
        .with_state(g)
}

/// Serves the page on `listener` until `shutdown` resolves.
pub async fn serve(
    coord: Arc<Coordinator>,
    listener: TcpListener,
    user_token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let app = router(coord, user_token.as_deref(), loopback);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// The page served in-process (`carto run --ui`, `carto serve --http`, tests).
pub struct LivePage {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LivePage {
    /// Binds `addr` and serves the page for `coord`. A non-loopback address
    /// is refused unless `insecure`: the page is plain HTTP, and the token
    /// would cross the network in the clear.
    pub async fn start(coord: Arc<Coordinator>, addr: &str, user_token: Option<String>, insecure: bool) -> anyhow::Result<LivePage> {
        let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("--http {addr}: cannot listen: {e}"))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && !insecure {
            anyhow::bail!(
                "--http {addr}: the live page is plain HTTP, so a token would cross the network in the clear; \
                 serve it on a loopback address and reach it through an SSH tunnel (ssh -L), or pass --insecure"
            );
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(coord, listener, user_token, async move {
            let _ = rx.await;
        }));
        Ok(LivePage { addr: local, stop: Some(tx), task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address; with a token, in the fragment (never sent to the server).
    pub fn url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("http://{}/#token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }
}

/// The live page's own parts around the map (the map's are
/// [`crate::datamap_html::BODY`]'s, in place of `<!--MAP-->`).
const LIVE_BODY: &str = r#"<div id="login" hidden><form id="login-form"><p>This coordinator needs a token.</p>
<input id="token" type="password" autocomplete="current-password" placeholder="token"> <button type="submit">open</button> <span id="login-error"></span></form></div>
<section id="jobs"><table class="rows"><thead><tr><th>job</th><th>name</th><th>state</th><th>epoch</th><th>loss</th><th>accuracy</th><th>samples/s</th><th>progress</th></tr></thead><tbody id="job-rows"></tbody></table><div id="live-status"></div></section>
<!--MAP-->"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in ["localhost", "localhost:8080", "127.0.0.1:1", "127.3.2.1", "[::1]:80", "[::1]", "LOCALHOST:9"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "evil.localhost.example:80", "10.0.0.1:80", "[::2]:80", "", "0.0.0.0:80"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn a_map_frame_holds_the_metadata_then_aligned_columns() {
        let map = pb::DataMap {
            job_id: "j".into(),
            epochs: 2,
            samples: 2,
            label_names: vec!["a".into(), "b".into()],
            label: vec![0, 1],
            confidence: vec![0.25, 0.75],
            variability: vec![0.1, 0.2],
            correctness: vec![0.5, 1.0],
            aum: vec![-0.5, 0.5],
            forgetting_events: vec![1, 0],
            region: vec![4, 1],
            texts: vec!["x".into(), "y".into()],
            ..Default::default()
        };
        let f = map_frame(&map);
        assert_eq!(&f[..4], MAP_MAGIC);
        let len = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
        let meta: serde_json::Value = serde_json::from_slice(&f[8..8 + len]).unwrap();
        assert_eq!(meta["n"], 2);
        assert_eq!(meta["texts"], serde_json::json!(["x", "y"]));
        let start = (8 + len).div_ceil(4) * 4;
        let buf = &f[start..];
        let [off, ty] = [&meta["columns"]["confidence"][0], &meta["columns"]["confidence"][1]];
        assert_eq!(ty, "f32");
        let off = off.as_u64().unwrap() as usize;
        assert_eq!(f32::from_le_bytes(buf[off + 4..off + 8].try_into().unwrap()), 0.75);
    }
}

//! The live page's HTTP side (`carto serve --http`): a gateway over
//! JobService behind the users' token. In-process on 127.0.0.1:0: a job is
//! driven epoch by epoch by a client speaking the worker protocol, and the
//! page's API must show each committed epoch's map with the metrics the
//! formulas give, exactly what GetDataMap returns over gRPC.

use std::time::Duration;

use carto_common::ipc;
use carto_common::metrics::{RowStats, SampleAccumulators};
use carto_common::proto::v1 as pb;
use carto_coordinator::http::{LivePage, MAP_MAGIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{label, logits, my_samples, rows_for, FakeRank, Fixture, ROWS};

const TOKEN: &str = "page-token-0123456789abcdef";

/// One HTTP/1.1 GET: (status, headers lower-cased, body).
async fn get(addr: std::net::SocketAddr, path: &str, host: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = raw[split + 4..].to_vec();
    // Bodies of known size come with a length; anything else would be chunked.
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    (status, head, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// The page's form of a map: metadata and the f32 column `name`.
fn decode_map(body: &[u8], name: &str) -> (serde_json::Value, Vec<f32>) {
    assert_eq!(&body[..4], MAP_MAGIC);
    let len = u32::from_le_bytes(body[4..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&body[8..8 + len]).unwrap();
    let base = (8 + len).div_ceil(4) * 4;
    let n = meta["n"].as_u64().unwrap() as usize;
    let off = base + meta["columns"][name][0].as_u64().unwrap() as usize;
    let col = (0..n).map(|i| f32::from_le_bytes(body[off + 4 * i..off + 4 * i + 4].try_into().unwrap())).collect();
    (meta, col)
}

#[tokio::test]
async fn the_live_page_shows_every_committed_epoch_behind_the_token() {
    let (mut f, job) = Fixture::start(1).await;
    let page = LivePage::start(f.server.coord.clone(), "127.0.0.1:0", Some(TOKEN.into()), false).await.unwrap();
    let addr = page.addr();
    let host = addr.to_string();
    let map_path = format!("/api/jobs/{}/map?texts=1", job.id);

    // The page and its code are public; every API call needs the token.
    let (status, head, body) = get(addr, "/", &host, None).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("<script src=\"/live.js\">"));
    let (status, head, _) = get(addr, "/live.js", &host, None).await;
    assert!(status == 200 && head.contains("text/javascript"), "{head}");
    for (token, what) in [(None, "no token"), (Some("wrong-token-0123456789"), "a wrong token")] {
        for path in ["/api/jobs", map_path.as_str()] {
            let (status, _, body) = get(addr, path, &host, token).await;
            assert_eq!(status, 401, "{path} with {what}");
            assert!(json(&body)["error"].as_str().unwrap().contains("token"), "{what}: one line naming the token");
        }
    }
    let (status, _, body) = get(addr, "/api/jobs/no-such-job/map", &host, Some(TOKEN)).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // Before the first epoch: the job is listed, its map has no points and says why.
    let (status, _, body) = get(addr, "/api/jobs", &host, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let jobs = json(&body);
    assert_eq!(jobs["jobs"][0]["id"], job.id.as_str());
    let (meta, _) = decode_map(&get(addr, &map_path, &host, Some(TOKEN)).await.2, "confidence");
    assert_eq!((meta["n"].as_u64(), meta["final"].as_bool()), (Some(0), Some(false)));
    assert!(meta["note"].as_str().unwrap().contains("first epoch"), "{meta}");

    // Each committed epoch: the map holds every sample with the metrics over
    // the epochs so far, and the same as GetDataMap over gRPC.
    let mut rank = FakeRank::assigned(FakeRank::join(&f.server.url()).await).await;
    let mut acc = SampleAccumulators::new(ROWS);
    for epoch in 0..2u32 {
        let samples = my_samples(&rank, epoch);
        let bytes = ipc::encode_batch(&rows_for(&samples, epoch).to_batch()).unwrap();
        let chunk = rank.chunk(epoch, bytes);
        assert_eq!(rank.report(vec![chunk]).await.unwrap(), samples.len() as u64);
        rank.done(epoch, samples.len() as u64).await.unwrap();
        for &s in &samples {
            let s = s as usize;
            let r = RowStats::from_logits(&logits(s, epoch), label(s) as usize);
            acc.observe(s, epoch, r.gold_prob, r.correct, r.margin, r.el2n).unwrap();
        }
        let body = get(addr, &map_path, &host, Some(TOKEN)).await.2;
        let (meta, confidence) = decode_map(&body, "confidence");
        let (_, variability) = decode_map(&body, "variability");
        assert_eq!(meta["n"], ROWS, "epoch {epoch}: every sample drawn");
        assert_eq!(meta["epochs"], epoch + 1, "epoch {epoch}");
        assert_eq!(meta["label_names"], serde_json::json!(["neg", "pos"]));
        assert_eq!(meta["texts"][7], "review number 7", "texts come with ?texts=1");
        for s in 0..ROWS {
            let m = acc.metrics(s).unwrap();
            assert!((confidence[s] as f64 - m.confidence).abs() < 1e-6, "epoch {epoch} sample {s}");
            assert!((variability[s] as f64 - m.variability).abs() < 1e-6, "epoch {epoch} sample {s}");
        }
        let grpc = f.jobs.get_data_map(pb::GetDataMapRequest { job_id: job.id.clone(), with_texts: false }).await.unwrap().into_inner();
        assert_eq!(grpc.epochs, epoch + 1);
        assert_eq!(grpc.confidence, confidence, "the page shows what gRPC exposes");
        assert!(grpc.texts.is_empty(), "texts only when asked for");
    }

    // Finished: the map is the job's metrics.parquet, its suspects' most predicted class known.
    let done = common::wait_state(&mut f.jobs, &job.id, pb::JobState::Succeeded).await;
    assert_eq!(done.epochs.len(), 2);
    let (meta, confidence) = decode_map(&get(addr, &map_path, &host, Some(TOKEN)).await.2, "confidence");
    assert_eq!(meta["final"], true);
    assert_eq!(meta["epochs"], 2);
    assert!(!meta["most_predicted"].as_array().unwrap().is_empty(), "{meta}");
    for (s, c) in confidence.iter().enumerate() {
        assert!((*c as f64 - acc.metrics(s).unwrap().confidence).abs() < 1e-6);
    }
    let (status, _, body) = get(addr, &format!("/api/jobs/{}", job.id), &host, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let j = json(&body);
    assert_eq!((j["state"].as_str(), j["epochs"].as_array().map(|e| e.len())), (Some("succeeded"), Some(2)));
    page.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_open_page_answers_only_to_loopback_host_names() {
    let (f, _job) = Fixture::start(1).await;
    let page = LivePage::start(f.server.coord.clone(), "127.0.0.1:0", None, false).await.unwrap();
    let addr = page.addr();
    // No token needed on an open coordinator, at a loopback name…
    for host in [addr.to_string(), format!("localhost:{}", addr.port())] {
        let (status, _, body) = get(addr, "/api/jobs", &host, None).await;
        assert_eq!(status, 200, "{host}: {}", String::from_utf8_lossy(&body));
    }
    // …but a page of another site rebinding its name to 127.0.0.1 reads nothing.
    let (status, _, body) = get(addr, "/api/jobs", "attacker.example:80", None).await;
    assert_eq!(status, 403);
    assert!(json(&body)["error"].as_str().unwrap().contains("loopback"));
    page.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_non_loopback_page_needs_insecure() {
    let (f, _job) = Fixture::start(1).await;
    let err = LivePage::start(f.server.coord.clone(), "0.0.0.0:0", Some(TOKEN.into()), false).await.err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("--insecure") && msg.contains("ssh -L"), "{msg}");
    let page = LivePage::start(f.server.coord.clone(), "0.0.0.0:0", Some(TOKEN.into()), true).await.unwrap();
    page.shutdown().await.unwrap();
}

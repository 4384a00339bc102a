//! The HTTP side of `ingest-load`: keep-alive HTTP/1.1 connections (hyper's connection-level
//! client, no pool, no TLS) that POST `/v1/batch` bodies and record what came back.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::SendRequest,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::{
    Latency,
    events::{IdSource, Template, TimeText},
    latency_histogram,
};

/// What every connection shares.
pub struct Target {
    /// Ingest's HTTP address.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: HeaderValue,
    /// Request path (`/v1/batch`).
    pub path: String,
    /// `Authorization: Basic …` with the write key.
    pub authorization: HeaderValue,
    /// Bodies to send, in turn.
    pub templates: Vec<Template>,
    /// Random id of this run: messageIds never repeat between runs.
    pub run_id: u32,
}

/// When connections send.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Each connection sends its next request when the previous one is answered.
    Closed,
    /// Requests are scheduled at this many a second over all connections; latency counts
    /// from the scheduled time.
    Open {
        /// Requests a second.
        rate: f64,
    },
}

/// Timing of a run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When the load starts.
    pub start: Instant,
    /// When measuring starts (after the warm-up).
    pub measure_from: Instant,
    /// When the load stops.
    pub end: Instant,
}

/// What one connection saw, measured part only.
pub struct ConnectionStats {
    ok: u64,
    non_2xx: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    not_fully_accepted: u64,
    events_accepted: u64,
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    first_error: Option<String>,
}

impl ConnectionStats {
    fn new() -> Self {
        Self {
            ok: 0,
            non_2xx: 0,
            statuses: BTreeMap::new(),
            errors: 0,
            not_fully_accepted: 0,
            events_accepted: 0,
            latency: latency_histogram(),
            send_lag: latency_histogram(),
            first_error: None,
        }
    }

    fn error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// The sum over connections.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Events in each request.
    pub events_per_request: usize,
    /// Mean body size in bytes.
    pub body_bytes: usize,
    /// Requests a second asked for (open loop).
    pub target_rate: Option<f64>,
    /// Seconds measured.
    pub seconds: f64,
    /// 2xx answers.
    pub ok: u64,
    /// Answers other than 2xx.
    pub non_2xx: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that failed without an answer (connection errors).
    pub errors: u64,
    /// 2xx answers that did not accept every event.
    pub not_fully_accepted: u64,
    /// The first connection error, to say why.
    pub first_error: Option<String>,
    /// 2xx answers a second.
    pub requests_per_sec: f64,
    /// Events accepted a second.
    pub events_per_sec: f64,
    /// Time to answer (open loop: from the scheduled send time).
    pub latency: Latency,
    /// Open loop: how late requests left after their scheduled time; a large value means
    /// the load generator (or all of its connections being busy) held requests back.
    pub send_lag: Latency,
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Runs one connection until `schedule.end`.
pub async fn connection(
    index: usize,
    connections: usize,
    target: Arc<Target>,
    pacing: Pacing,
    schedule: Schedule,
) -> ConnectionStats {
    let mut stats = ConnectionStats::new();
    let mut ids = IdSource::new(target.run_id, index as u32);
    let mut now_text = TimeText::default();
    let mut buf = BytesMut::new();
    let templates = &target.templates;
    let mut next_template = (index * 7919) % templates.len().max(1);
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut sequence: u64 = 0;
    loop {
        let scheduled = match pacing {
            Pacing::Closed => {
                let now = Instant::now();
                if now >= schedule.end {
                    break;
                }
                now
            }
            Pacing::Open { rate } => {
                let slot = sequence * connections as u64 + index as u64;
                sequence += 1;
                let at = schedule.start + Duration::from_secs_f64(slot as f64 / rate);
                if at >= schedule.end {
                    break;
                }
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                at
            }
        };
        let open_measured = scheduled >= schedule.measure_from;
        if sender.is_none() {
            match connect(target.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    if open_measured {
                        stats.error(e);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        now_text.refresh();
        let template = &templates[next_template];
        next_template = (next_template + 1) % templates.len();
        let body = template.render(&mut buf, &mut ids, &now_text);
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = match target.path.parse() {
            Ok(uri) => uri,
            Err(_) => break,
        };
        let headers = request.headers_mut();
        headers.insert(HOST, target.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(AUTHORIZATION, target.authorization.clone());
        let sent = Instant::now();
        let answer = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<(StatusCode, Bytes), hyper::Error>((status, body))
        }
        .await;
        let done = Instant::now();
        let measured = match pacing {
            Pacing::Closed => done >= schedule.measure_from && done < schedule.end,
            Pacing::Open { .. } => open_measured,
        };
        match answer {
            Ok((status, body)) => {
                if !measured {
                    continue;
                }
                *stats.statuses.entry(status.as_u16()).or_default() += 1;
                if status.is_success() {
                    stats.ok += 1;
                    let n = template.events();
                    if fully_accepted(&body, n) {
                        stats.events_accepted += n as u64;
                    } else {
                        stats.not_fully_accepted += 1;
                    }
                } else {
                    stats.non_2xx += 1;
                }
                let _ = stats
                    .latency
                    .record(micros(done.saturating_duration_since(scheduled)));
                let _ = stats
                    .send_lag
                    .record(micros(sent.saturating_duration_since(scheduled)));
            }
            Err(e) => {
                sender = None;
                if measured {
                    stats.error(format!("request: {e}"));
                }
            }
        }
    }
    stats
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Whether an answer says every one of the `n` events was accepted. Ingest writes the counts
/// first, in this order (see docs/ingest.md).
fn fully_accepted(body: &[u8], n: usize) -> bool {
    let mut expected = String::with_capacity(64);
    expected.push_str(r#"{"success":true,"accepted":"#);
    expected.push_str(&n.to_string());
    expected.push_str(r#","duplicates":0,"rejected":0"#);
    body.starts_with(expected.as_bytes())
}

/// Adds up the connections' results.
pub fn summarise(
    stats: Vec<ConnectionStats>,
    pacing: Pacing,
    target: &Target,
    seconds: f64,
) -> LoadResult {
    let mut latency = latency_histogram();
    let mut send_lag = latency_histogram();
    let mut result = LoadResult {
        mode: match pacing {
            Pacing::Closed => "closed",
            Pacing::Open { .. } => "open",
        },
        connections: stats.len(),
        events_per_request: target.templates.first().map_or(0, Template::events),
        body_bytes: target.templates.iter().map(Template::len).sum::<usize>()
            / target.templates.len().max(1),
        target_rate: match pacing {
            Pacing::Closed => None,
            Pacing::Open { rate } => Some(rate),
        },
        seconds,
        ok: 0,
        non_2xx: 0,
        statuses: BTreeMap::new(),
        errors: 0,
        not_fully_accepted: 0,
        first_error: None,
        requests_per_sec: 0.0,
        events_per_sec: 0.0,
        latency: Latency::of(&latency),
        send_lag: Latency::of(&send_lag),
    };
    let mut events = 0;
    for s in stats {
        result.ok += s.ok;
        result.non_2xx += s.non_2xx;
        result.errors += s.errors;
        result.not_fully_accepted += s.not_fully_accepted;
        events += s.events_accepted;
        for (code, n) in s.statuses {
            *result.statuses.entry(code).or_default() += n;
        }
        if result.first_error.is_none() {
            result.first_error = s.first_error;
        }
        let _ = latency.add(&s.latency);
        let _ = send_lag.add(&s.send_lag);
    }
    result.requests_per_sec = result.ok as f64 / seconds;
    result.events_per_sec = events as f64 / seconds;
    result.latency = Latency::of(&latency);
    result.send_lag = Latency::of(&send_lag);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_answers_are_recognised() {
        let body = br#"{"success":true,"accepted":50,"duplicates":0,"rejected":0,"results":[]}"#;
        assert!(fully_accepted(body, 50));
        assert!(!fully_accepted(body, 5));
        let partial = br#"{"success":true,"accepted":49,"duplicates":1,"rejected":0,"results":[]}"#;
        assert!(!fully_accepted(partial, 50));
    }
}

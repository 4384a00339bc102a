//! A minimal HTTP/1.0 GET, enough to probe a service's admin port without an HTTP client crate.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code and body of `GET path` on `addr`, or `None` when nothing answers.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Some((status, body))
}

/// The status code of `GET path` on `addr`, or `None` when nothing answers.
pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    get(addr, path).await.map(|(status, _)| status)
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition (0 when absent).
pub fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

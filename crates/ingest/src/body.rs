//! Reading request bodies within Segment's limits, gzip included.
//!
//! The limit holds on the bytes after decompression, and decompression stops as soon as it is
//! passed, so a small compressed body cannot expand into gigabytes (a compression bomb).

use std::io::Read;

use actix_web::{HttpRequest, http::header, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::ApiError;

/// Reads the whole body: at most `limit` bytes on the wire and after decompression.
///
/// A body that arrives in one chunk is kept as it is; a longer one is copied once into a
/// buffer sized from `Content-Length`. Events are later cut from the result without copying.
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total = 0;
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
        total += chunk.len();
        if total > limit {
            return Err(too_large(limit));
        }
        match (&mut joined, first.take()) {
            (Some(buffer), _) => buffer.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).max(total));
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
        }
    }
    let body = match joined {
        Some(buffer) => buffer.freeze(),
        None => first.unwrap_or_default(),
    };
    match content_encoding(req).as_deref() {
        None | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => gunzip(&body, limit).map(Bytes::from),
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}

fn content_encoding(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
}

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!("the request is over {limit} bytes"))
}

/// Decompresses at most `limit` bytes; one byte more means the body is too large.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit + 1));
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadRequest(format!("the gzip body is corrupt: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request is over {limit} bytes once decompressed"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b'a'; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "the bomb is small on the wire");
        assert!(matches!(
            gunzip(&bomb, 512_000),
            Err(ApiError::PayloadTooLarge(_))
        ));
        let fine = gzip(&vec![b'a'; 512_000]);
        assert_eq!(gunzip(&fine, 512_000).unwrap().len(), 512_000);
        assert!(matches!(
            gunzip(b"not gzip", 10),
            Err(ApiError::BadRequest(_))
        ));
    }
}

//! Payload compression on the wire.
//!
//! The publisher compresses a message's payload with zstd and names the encoding in the AMQP
//! `content-encoding` property; the consumer decompresses it before the caller sees the
//! delivery, so callers always handle the encoded protobuf. Compression trades a little of the
//! publisher's CPU for far fewer bytes through the broker: quorum queues write every message
//! to their log and segment files, once per consumer group, and event batches compress about
//! fourfold.
//!
//! A message without `content-encoding` is read as it is, so consumers read messages from
//! publishers with compression off (or from before it existed) unchanged.

use serde::Deserialize;

/// The `content-encoding` of a zstd-compressed payload.
pub const ZSTD: &str = "zstd";

/// Payloads shorter than this are sent as they are: the frame header and the call cost more
/// than the bytes saved.
pub const MIN_COMPRESSED_BYTES: usize = 512;

/// The largest payload a consumer decompresses. Publishers send at most a few MiB (ingest's
/// `batching.max_bytes`); a frame claiming more is corrupt or hostile and is refused before
/// anything is allocated for it.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// How publishers encode payloads (`broker.compression`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As they are.
    None,
    /// zstd at `broker.zstd_level`.
    Zstd,
}

/// `payload` as it goes on the wire under `compression`, with its `content-encoding` (`None`:
/// sent as it is).
pub fn encode(
    payload: &[u8],
    compression: Compression,
    level: i32,
) -> (std::borrow::Cow<'_, [u8]>, Option<&'static str>) {
    match compression {
        Compression::Zstd if payload.len() >= MIN_COMPRESSED_BYTES => {
            match zstd::bulk::compress(payload, level) {
                Ok(compressed) => (compressed.into(), Some(ZSTD)),
                // Compressing a slice in memory fails only on an invalid level, which
                // validation refuses; sending it as it is stays correct.
                Err(_) => (payload.into(), None),
            }
        }
        _ => (payload.into(), None),
    }
}

/// A payload that could not be decoded from its `content-encoding`: the message is kept (the
/// consumer dead-letters it with `reason`), never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The encoding the message claimed; the payload is still in it.
    pub encoding: String,
    /// What went wrong.
    pub reason: String,
}

/// Decodes a received payload from `encoding`. On failure the payload comes back as received.
pub fn decode(encoding: Option<&str>, payload: Vec<u8>) -> Result<Vec<u8>, (Vec<u8>, Unreadable)> {
    let unreadable = |payload, reason: String| {
        Err((
            payload,
            Unreadable {
                encoding: encoding.unwrap_or_default().to_owned(),
                reason,
            },
        ))
    };
    match encoding {
        None | Some("") | Some("identity") => Ok(payload),
        Some(ZSTD) => match decompress(&payload) {
            Ok(decoded) => Ok(decoded),
            Err(reason) => unreadable(payload, reason),
        },
        Some(other) => unreadable(payload, format!("unsupported content-encoding {other:?}")),
    }
}

fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let too_large = || format!("decodes to more than {MAX_DECODED_BYTES} bytes");
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => {
            let size = usize::try_from(size).map_err(|_| too_large())?;
            if size > MAX_DECODED_BYTES {
                return Err(too_large());
            }
            zstd::bulk::decompress(frame, size).map_err(|e| format!("not a zstd frame: {e}"))
        }
        // Streamed frames do not state their size: read up to the bound.
        Ok(None) => {
            let mut decoded = Vec::new();
            zstd::stream::read::Decoder::new(frame)
                .and_then(|d| {
                    d.take(MAX_DECODED_BYTES as u64 + 1)
                        .read_to_end(&mut decoded)
                })
                .map_err(|e| format!("not a zstd frame: {e}"))?;
            if decoded.len() > MAX_DECODED_BYTES {
                return Err(too_large());
            }
            Ok(decoded)
        }
        Err(_) => Err("not a zstd frame".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_like() -> Vec<u8> {
        (0..200)
            .flat_map(|i| format!("{{\"type\":\"track\",\"event\":\"Order {i}\"}}").into_bytes())
            .collect()
    }

    #[test]
    fn zstd_payloads_round_trip_and_shrink() {
        let payload = batch_like();
        let (wire, encoding) = encode(&payload, Compression::Zstd, 1);
        assert_eq!(encoding, Some(ZSTD));
        assert!(wire.len() * 4 < payload.len(), "{} bytes", wire.len());
        assert_eq!(decode(encoding, wire.into_owned()).unwrap(), payload);
    }

    #[test]
    fn small_payloads_and_compression_off_go_as_they_are() {
        let (wire, encoding) = encode(b"tiny", Compression::Zstd, 1);
        assert_eq!((wire.as_ref(), encoding), (&b"tiny"[..], None));
        let payload = batch_like();
        let (wire, encoding) = encode(&payload, Compression::None, 1);
        assert_eq!((wire.as_ref(), encoding), (payload.as_slice(), None));
        assert_eq!(decode(None, payload.clone()).unwrap(), payload);
    }

    #[test]
    fn unreadable_payloads_come_back_as_received_with_a_reason() {
        let (payload, why) = decode(Some(ZSTD), b"not zstd at all".to_vec()).unwrap_err();
        assert_eq!(payload, b"not zstd at all");
        assert_eq!(why.encoding, "zstd");
        assert!(why.reason.contains("not a zstd frame"), "{}", why.reason);

        let (_, why) = decode(Some("gzip"), vec![1, 2, 3]).unwrap_err();
        assert!(why.reason.contains("unsupported"), "{}", why.reason);
    }

    #[test]
    fn a_frame_claiming_more_than_the_bound_is_refused_unread() {
        let huge = vec![0u8; MAX_DECODED_BYTES + 1];
        let frame = zstd::bulk::compress(&huge, 1).unwrap();
        let (_, why) = decode(Some(ZSTD), frame).unwrap_err();
        assert!(why.reason.contains("more than"), "{}", why.reason);

        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
        std::io::Write::write_all(&mut encoder, &huge).unwrap();
        encoder.finish().unwrap();
        let (_, why) = decode(Some(ZSTD), streamed).unwrap_err();
        assert!(why.reason.contains("more than"), "{}", why.reason);
    }
}

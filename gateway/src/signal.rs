//! Decoding LiveKit signalling frames on their way through the relay.
//!
//! LiveKit accepts a client's signalling in two encodings: protobuf in binary WebSocket frames
//! and protobuf's JSON mapping in text frames (it then answers in JSON until the client sends
//! binary again). Both are decoded here into the same `SignalRequest`, so that one policy sees
//! every message whatever its encoding; LiveKit itself is only ever spoken to in binary (a JSON
//! client's requests are re-encoded), so it never switches to JSON and every answer it gives is
//! decoded by the relay too; a JSON client gets them translated back.
//!
//! The relay forwards the original bytes of every binary frame it does not change (prost drops
//! unknown fields, so re-encoding would silently strip anything newer than our protocol crate).
//! The one change it makes to a server frame, the ICE servers of a join or reconnect answer, is
//! done on the wire ([`with_ice_servers`]) for the same reason.

use livekit_protocol::{IceServer, SignalRequest, SignalResponse, signal_request, signal_response};
use prost::{
    Message,
    bytes::BufMut,
    encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint},
};

/// What the relay does with a frame from the browser.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    Forward(&'static str),
    /// `SignalRequest.simulate` makes the server fake node failures, migrations and bandwidth
    /// limits with no dev-mode check: never let a client send it.
    Drop(&'static str),
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable {side} frame ({len} bytes): {reason}")]
pub struct FrameError {
    pub side: &'static str,
    pub len: usize,
    pub reason: String,
}

pub fn inspect_client_frame(bytes: &[u8]) -> Result<ClientVerdict, FrameError> {
    decode_client_frame(bytes).map(|(verdict, _)| verdict)
}

/// The verdict and the decoded request (for the policies that act on it).
pub fn decode_client_frame(bytes: &[u8]) -> Result<(ClientVerdict, SignalRequest), FrameError> {
    let request = SignalRequest::decode(bytes).map_err(|source| FrameError {
        side: "client",
        len: bytes.len(),
        reason: source.to_string(),
    })?;
    let verdict = client_verdict(&request);
    Ok((verdict, request))
}

/// A text frame from the client: LiveKit's JSON encoding of a `SignalRequest` (protobuf's JSON
/// mapping, unknown fields ignored, as LiveKit parses it).
pub fn decode_client_text(text: &str) -> Result<(ClientVerdict, SignalRequest), FrameError> {
    let request: SignalRequest = serde_json::from_str(text).map_err(|e| FrameError {
        side: "client (JSON)",
        len: text.len(),
        reason: e.to_string(),
    })?;
    let verdict = client_verdict(&request);
    Ok((verdict, request))
}

/// A server message in LiveKit's JSON encoding, for a client that speaks JSON. Fails for a
/// value JSON cannot name (an enum value newer than our protocol crate).
pub fn encode_server_text(response: &SignalResponse) -> Result<String, serde_json::Error> {
    serde_json::to_string(response)
}

fn client_verdict(request: &SignalRequest) -> ClientVerdict {
    use signal_request::Message as M;
    match request.message {
        Some(M::Simulate(_)) => ClientVerdict::Drop("simulate"),
        Some(M::Offer(_)) => ClientVerdict::Forward("offer"),
        Some(M::Answer(_)) => ClientVerdict::Forward("answer"),
        Some(M::Trickle(_)) => ClientVerdict::Forward("trickle"),
        Some(M::AddTrack(_)) => ClientVerdict::Forward("add_track"),
        Some(M::Mute(_)) => ClientVerdict::Forward("mute"),
        Some(M::Subscription(_)) => ClientVerdict::Forward("subscription"),
        Some(M::TrackSetting(_)) => ClientVerdict::Forward("track_setting"),
        Some(M::Leave(_)) => ClientVerdict::Forward("leave"),
        Some(M::SyncState(_)) => ClientVerdict::Forward("sync_state"),
        Some(M::Ping(_)) | Some(M::PingReq(_)) => ClientVerdict::Forward("ping"),
        Some(_) => ClientVerdict::Forward("other"),
        // A message type newer than our protocol crate: forward it untouched.
        None => ClientVerdict::Forward("unknown"),
    }
}

/// The name of a server frame's message, for logs and metrics.
pub fn inspect_server_frame(bytes: &[u8]) -> Result<&'static str, FrameError> {
    decode_server_frame(bytes).map(|(kind, _)| kind)
}

/// The message's name and the decoded response.
pub fn decode_server_frame(bytes: &[u8]) -> Result<(&'static str, SignalResponse), FrameError> {
    let response = SignalResponse::decode(bytes).map_err(|source| FrameError {
        side: "server",
        len: bytes.len(),
        reason: source.to_string(),
    })?;
    Ok((server_kind(&response), response))
}

/// A text frame from LiveKit (it answers in JSON only to a client that sent JSON, which the
/// relay never does; decoded all the same so that nothing escapes the policy).
pub fn decode_server_text(text: &str) -> Result<(&'static str, SignalResponse), FrameError> {
    let response: SignalResponse = serde_json::from_str(text).map_err(|e| FrameError {
        side: "server (JSON)",
        len: text.len(),
        reason: e.to_string(),
    })?;
    Ok((server_kind(&response), response))
}

/// `SignalResponse.join` and `.reconnect`, and the `ice_servers` field inside each.
const JOIN_TAG: u32 = 1;
const JOIN_ICE_TAG: u32 = 5;
const RECONNECT_TAG: u32 = 19;
const RECONNECT_ICE_TAG: u32 = 1;

/// A join or reconnect answer's frame with its ICE servers replaced by `servers` (control's
/// TURN credentials, the one source of them), every other byte kept; `None` for any other frame
/// or one that does not parse.
pub fn with_ice_servers(frame: &[u8], servers: &[IceServer]) -> Option<Vec<u8>> {
    let fields = fields(frame)?;
    let mut out = Vec::with_capacity(frame.len() + 256);
    let mut replaced = false;
    for field in fields {
        let inner_tag = match (field.tag, field.wire_type) {
            (JOIN_TAG, WireType::LengthDelimited) => Some(JOIN_ICE_TAG),
            (RECONNECT_TAG, WireType::LengthDelimited) => Some(RECONNECT_ICE_TAG),
            _ => None,
        };
        match inner_tag {
            Some(ice_tag) => {
                let inner = replace_repeated(field.payload, ice_tag, servers)?;
                encode_key(field.tag, WireType::LengthDelimited, &mut out);
                encode_varint(inner.len() as u64, &mut out);
                out.put_slice(&inner);
                replaced = true;
            }
            None => out.put_slice(field.raw),
        }
    }
    replaced.then_some(out)
}

/// `message`'s bytes without field `tag`, followed by `servers` as that field.
fn replace_repeated(message: &[u8], tag: u32, servers: &[IceServer]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(message.len() + 256);
    for field in fields(message)? {
        if field.tag != tag {
            out.put_slice(field.raw);
        }
    }
    for server in servers {
        let encoded = server.encode_to_vec();
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(encoded.len() as u64, &mut out);
        out.put_slice(&encoded);
    }
    Some(out)
}

struct Field<'a> {
    tag: u32,
    wire_type: WireType,
    /// The whole field, key included.
    raw: &'a [u8],
    /// A length-delimited field's content (empty for other wire types).
    payload: &'a [u8],
}

/// The top-level fields of an encoded message, or `None` if it does not parse.
fn fields(mut buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        let payload: &[u8] = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                &[]
            }
            WireType::SixtyFourBit => {
                buf = buf.get(8..)?;
                &[]
            }
            WireType::ThirtyTwoBit => {
                buf = buf.get(4..)?;
                &[]
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let payload = buf.get(..len)?;
                buf = &buf[len..];
                payload
            }
            // Groups are not used by LiveKit's protocol.
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let consumed = start.len() - buf.len();
        out.push(Field {
            tag,
            wire_type,
            raw: &start[..consumed],
            payload,
        });
    }
    Some(out)
}

fn server_kind(response: &SignalResponse) -> &'static str {
    use signal_response::Message as M;
    match response.message {
        Some(M::Join(_)) => "join",
        Some(M::Reconnect(_)) => "reconnect",
        Some(M::Offer(_)) => "offer",
        Some(M::Answer(_)) => "answer",
        Some(M::Trickle(_)) => "trickle",
        Some(M::Update(_)) => "participant_update",
        Some(M::TrackPublished(_)) => "track_published",
        Some(M::Leave(_)) => "leave",
        Some(M::ConnectionQuality(_)) => "connection_quality",
        Some(M::StreamStateUpdate(_)) => "stream_state",
        Some(M::RefreshToken(_)) => "refresh_token",
        Some(M::Pong(_)) | Some(M::PongResp(_)) => "pong",
        Some(M::TrackSubscribed(_)) => "track_subscribed",
        Some(_) => "other",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::{SimulateScenario, simulate_scenario};

    #[test]
    fn simulate_is_dropped() {
        let frame = SignalRequest {
            message: Some(signal_request::Message::Simulate(SimulateScenario {
                scenario: Some(simulate_scenario::Scenario::NodeFailure(true)),
            })),
        }
        .encode_to_vec();
        assert_eq!(
            inspect_client_frame(&frame).unwrap(),
            ClientVerdict::Drop("simulate")
        );
    }

    #[test]
    fn ping_is_forwarded() {
        let frame = SignalRequest {
            message: Some(signal_request::Message::Ping(42)),
        }
        .encode_to_vec();
        assert_eq!(
            inspect_client_frame(&frame).unwrap(),
            ClientVerdict::Forward("ping")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(inspect_client_frame(&[0xff, 0xff, 0xff]).is_err());
        assert!(inspect_server_frame(&[0x0a, 0x80]).is_err());
    }

    #[test]
    fn json_requests_get_the_same_verdicts_as_binary_ones() {
        // What a client speaking LiveKit's JSON sends (protobuf JSON mapping, camelCase).
        let (verdict, request) =
            decode_client_text(r#"{"simulate":{"nodeFailure":true}}"#).unwrap();
        assert_eq!(verdict, ClientVerdict::Drop("simulate"));
        assert!(matches!(
            request.message,
            Some(signal_request::Message::Simulate(_))
        ));
        let (verdict, request) = decode_client_text(
            r#"{"trackSetting":{"trackSids":["TR_a"],"quality":"HIGH","width":1280,"height":720}}"#,
        )
        .unwrap();
        assert_eq!(verdict, ClientVerdict::Forward("track_setting"));
        let Some(signal_request::Message::TrackSetting(settings)) = request.message else {
            panic!("settings");
        };
        assert_eq!(
            (settings.track_sids[0].as_str(), settings.height),
            ("TR_a", 720)
        );
        let (verdict, _) = decode_client_text(r#"{"mute":{"sid":"TR_c","muted":false}}"#).unwrap();
        assert_eq!(verdict, ClientVerdict::Forward("mute"));
        // Unknown fields are ignored, as LiveKit does; garbage is an error.
        assert!(decode_client_text(r#"{"ping":"5","future":1}"#).is_ok());
        assert!(decode_client_text("not json").is_err());
        // And back: a server message in JSON.
        let text = encode_server_text(&SignalResponse {
            message: Some(signal_response::Message::RefreshToken("t".into())),
        })
        .unwrap();
        assert_eq!(text, r#"{"refreshToken":"t"}"#);
        assert_eq!(decode_server_text(&text).unwrap().0, "refresh_token");
    }

    #[test]
    fn ice_servers_are_replaced_on_the_wire_and_nothing_else_changes() {
        use livekit_protocol::{JoinResponse, ReconnectResponse};
        let theirs = IceServer {
            urls: vec!["turn:livekit-own:3478".into()],
            username: "24h".into(),
            credential: "secret".into(),
        };
        let ours = IceServer {
            urls: vec!["turn:localhost:3478?transport=udp".into()],
            username: "1700000000:@bob:localhost".into(),
            credential: "c2lnbmVk".into(),
        };
        let join = SignalResponse {
            message: Some(signal_response::Message::Join(JoinResponse {
                server_version: "1.13.5".into(),
                ice_servers: vec![theirs.clone(), theirs.clone()],
                ping_interval: 5,
                ..Default::default()
            })),
        };
        let mut frame = join.encode_to_vec();
        // A field from a newer protocol, which prost would drop on re-encoding.
        frame.extend_from_slice(&[0xba, 0x3e, 0x01, 0x07]);
        let rewritten = with_ice_servers(&frame, std::slice::from_ref(&ours)).unwrap();
        assert!(
            rewritten.ends_with(&[0xba, 0x3e, 0x01, 0x07]),
            "unknown field kept"
        );
        let Some(signal_response::Message::Join(decoded)) =
            SignalResponse::decode(rewritten.as_slice())
                .unwrap()
                .message
        else {
            panic!("still a join");
        };
        assert_eq!(decoded.ice_servers, vec![ours.clone()]);
        assert_eq!(
            (decoded.server_version.as_str(), decoded.ping_interval),
            ("1.13.5", 5)
        );

        let reconnect = SignalResponse {
            message: Some(signal_response::Message::Reconnect(ReconnectResponse {
                ice_servers: vec![theirs],
                ..Default::default()
            })),
        };
        let rewritten =
            with_ice_servers(&reconnect.encode_to_vec(), std::slice::from_ref(&ours)).unwrap();
        let Some(signal_response::Message::Reconnect(decoded)) =
            SignalResponse::decode(rewritten.as_slice())
                .unwrap()
                .message
        else {
            panic!("still a reconnect");
        };
        assert_eq!(decoded.ice_servers, vec![ours.clone()]);
        // Anything else is not touched; garbage is not parsed.
        let pong = SignalResponse {
            message: Some(signal_response::Message::Pong(1)),
        };
        assert_eq!(
            with_ice_servers(&pong.encode_to_vec(), std::slice::from_ref(&ours)),
            None
        );
        assert_eq!(with_ice_servers(&[0x0a, 0x80], &[ours]), None);
    }

    #[test]
    fn a_newer_message_type_is_forwarded() {
        // Field 999 (length-delimited) is not in SignalRequest's oneof: prost skips it.
        let frame = [0xba, 0x3e, 0x01, 0x00];
        assert_eq!(
            inspect_client_frame(&frame).unwrap(),
            ClientVerdict::Forward("unknown")
        );
    }
}

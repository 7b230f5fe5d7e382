//! Decoding LiveKit signalling frames on their way through the relay.
//!
//! The relay forwards the original bytes of every frame it does not change (prost drops unknown
//! fields, so re-encoding would silently strip anything newer than our protocol crate). This
//! module only decides what to do with a frame; policy that rewrites frames builds on it.

use livekit_protocol::{SignalRequest, SignalResponse, signal_request, signal_response};
use prost::Message;

/// What the relay does with a frame from the browser.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    Forward(&'static str),
    /// `SignalRequest.simulate` makes the server fake node failures, migrations and bandwidth
    /// limits with no dev-mode check: never let a client send it.
    Drop(&'static str),
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable {side} frame ({len} bytes): {source}")]
pub struct FrameError {
    pub side: &'static str,
    pub len: usize,
    #[source]
    pub source: prost::DecodeError,
}

pub fn inspect_client_frame(bytes: &[u8]) -> Result<ClientVerdict, FrameError> {
    decode_client_frame(bytes).map(|(verdict, _)| verdict)
}

/// The verdict and the decoded request (for the policies that act on it).
pub fn decode_client_frame(bytes: &[u8]) -> Result<(ClientVerdict, SignalRequest), FrameError> {
    let request = SignalRequest::decode(bytes).map_err(|source| FrameError {
        side: "client",
        len: bytes.len(),
        source,
    })?;
    let verdict = client_verdict(&request);
    Ok((verdict, request))
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
        source,
    })?;
    Ok((server_kind(&response), response))
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
    fn a_newer_message_type_is_forwarded() {
        // Field 999 (length-delimited) is not in SignalRequest's oneof: prost skips it.
        let frame = [0xba, 0x3e, 0x01, 0x00];
        assert_eq!(
            inspect_client_frame(&frame).unwrap(),
            ClientVerdict::Forward("unknown")
        );
    }
}

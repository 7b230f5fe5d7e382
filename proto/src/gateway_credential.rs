//! The gateway credential: the shared secret a gateway presents to control's gateway RPCs
//! (`WatchRevocations`, `ListParticipants`, `SetParticipantAttribute`, `MutePublishedTrack`) as
//! `authorization: Bearer <credential>` metadata. It is deliberately not a LiveKit key: only
//! control (and LiveKit) may hold LiveKit's API secret. Both services check its shape the same
//! way when they load their configuration.

/// The gRPC metadata key the credential travels in.
pub const METADATA_KEY: &str = "authorization";

/// Shorter than this is guessable; the dev stack and `openssl rand -hex 32` give far more.
pub const MIN_LEN: usize = 32;

/// Whether `credential` can be a gateway credential; the error says why not (never the value).
pub fn check(setting: &str, credential: &str) -> Result<(), String> {
    if credential.len() < MIN_LEN {
        return Err(format!(
            "{setting} must be at least {MIN_LEN} characters (it is a shared secret)"
        ));
    }
    // It travels in a header value after "Bearer ": visible ASCII only.
    if !credential.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{setting} must be printable ASCII without spaces (it travels in a gRPC header)"
        ));
    }
    Ok(())
}

/// The metadata value: `Bearer <credential>`.
pub fn bearer(credential: &str) -> String {
    format!("Bearer {credential}")
}

/// The credential a request presents, if its metadata value has the expected shape.
pub fn presented(value: &str) -> Option<&str> {
    value.strip_prefix("Bearer ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_unprintable_credentials_are_refused_without_echoing_them() {
        let short = "a".repeat(MIN_LEN - 1);
        let error = check("gateway_credential", &short).unwrap_err();
        assert!(error.contains("gateway_credential"), "{error}");
        assert!(!error.contains(&short));
        let spaced = format!("{} x", "a".repeat(MIN_LEN));
        assert!(check("c", &spaced).unwrap_err().contains("printable"));
        let good = "A-z_0.9~".repeat(4);
        check("c", &good).unwrap();
        assert_eq!(presented(&bearer(&good)), Some(good.as_str()));
        assert_eq!(presented(&good), None);
    }
}

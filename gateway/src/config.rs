//! Gateway configuration: one typed struct from an optional TOML file and `KOINOS_GATEWAY_*`
//! environment variables (nested keys joined with `__`); the credential for control's gRPC
//! inline (dev) or from a file (production). The gateway holds no LiveKit credential. Fails
//! fast naming the offending setting.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where browsers connect their LiveKit signalling (the URL control hands out).
    pub listen: SocketAddr,
    /// LiveKit's own signalling endpoint, e.g. `ws://127.0.0.1:7881`.
    pub upstream_url: String,
    /// Page origins allowed to open a session (LiveKit itself accepts any). `["*"]` allows all;
    /// requests without an `Origin` header (native clients, loadtest) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Largest signalling frame accepted from either side; a larger one ends the session.
    pub max_frame_bytes: usize,
    /// Control's gRPC endpoint. Control admits every session (the client's ticket exchanged for
    /// a LiveKit token after membership is checked), renews connected clients' tickets, streams
    /// revocations, and makes the fallback's and a resume's RoomService calls. Required: without
    /// control the gateway admits nobody.
    pub control_grpc_url: String,
    /// The gateway credential control expects (its `gateway_credential`).
    pub control_credential: Option<String>,
    pub control_credential_file: Option<PathBuf>,
    /// How often a connected client is handed a renewed ticket (for its next resume), in
    /// seconds; less than control's `call.token_ttl`.
    pub ticket_renew_interval_secs: u64,
    /// A session whose browser sends nothing (livekit-client pings every few seconds) for this
    /// many seconds is ended.
    pub browser_silence_timeout_secs: u64,
    /// Sessions one client address may open at once…
    pub session_rate_burst: u32,
    /// …and how many a minute after that (0 disables the limit). Each costs control a check.
    pub session_rate_per_minute: u32,
    /// The listener: connection limits and timeouts (WebSocket sessions keep their connection
    /// slot for as long as they last).
    pub http: koinos_net::ServeLimits,
    /// The quality ladder: for calls of up to `max_participants` people, camera video each
    /// subscriber receives is at most `max_height` lines. Ascending; the last step applies
    /// beyond it.
    pub ladder: Vec<LadderStep>,
    /// The audio-only fallback on a link that stays bad (see `fallback.rs`).
    pub fallback: crate::fallback::FallbackConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderStep {
    pub max_participants: u32,
    pub max_height: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7880".parse().expect("literal address"),
            upstream_url: "ws://127.0.0.1:7881".into(),
            allowed_origins: vec!["http://localhost:8080".into()],
            max_frame_bytes: 1024 * 1024,
            control_grpc_url: "http://127.0.0.1:50051".into(),
            control_credential: None,
            control_credential_file: None,
            ticket_renew_interval_secs: 240,
            browser_silence_timeout_secs: 60,
            session_rate_burst: 120,
            session_rate_per_minute: 600,
            http: koinos_net::ServeLimits {
                max_connections: 4096,
                max_connections_per_address: 256,
                ..koinos_net::ServeLimits::default()
            },
            ladder: koinos_proto::contract::DEFAULT_LADDER
                .iter()
                .map(|&(max_participants, max_height)| LadderStep {
                    max_participants,
                    max_height,
                })
                .collect(),
            fallback: crate::fallback::FallbackConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings of earlier versions, when the gateway held LiveKit's API key and secret.
const REMOVED_SETTINGS: [&str; 3] = ["api_key", "api_secret", "api_secret_file"];

/// A setting of earlier versions, when the gateway remembered revocations to refuse old tokens.
const REVOCATION_MEMORY: &str = "revocation_memory_secs";

/// Why an old configuration is refused, and what to write instead (`found`: what it has).
fn removed_settings_message(found: &[&str]) -> String {
    format!(
        "{} no longer gateway settings (found: {}): the gateway holds no LiveKit credential, \
         LiveKit checks every token on the leg the gateway opens for it. Remove them, and give \
         the gateway control_credential_file (or control_credential; env \
         KOINOS_GATEWAY_CONTROL_CREDENTIAL_FILE) holding the same value as control's \
         gateway_credential, which it now presents to control instead of a LiveKit token.",
        "api_key, api_secret and api_secret_file are",
        found.join(", ")
    )
}

impl Config {
    /// Defaults, then the TOML file (if given), then `KOINOS_GATEWAY_*`; returns the control
    /// credential apart.
    pub fn load(file: Option<&std::path::Path>) -> Result<(Self, String), ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let figment = figment.merge(Env::prefixed("KOINOS_GATEWAY_").split("__"));
        // Before extracting: `deny_unknown_fields` would name only the first, without saying
        // what replaced it.
        let found: Vec<&str> = REMOVED_SETTINGS
            .into_iter()
            .filter(|key| figment.contains(key))
            .collect();
        if !found.is_empty() {
            return Err(ConfigError::Invalid(removed_settings_message(&found)));
        }
        if figment.contains(REVOCATION_MEMORY) {
            return Err(ConfigError::Invalid(format!(
                "{REVOCATION_MEMORY} is no longer a gateway setting: the gateway remembers no \
                 revocations, control admits every session after checking membership again. \
                 Remove it."
            )));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        let credential = config.validate()?;
        Ok((config, credential))
    }

    /// Checks every setting; returns the control credential (read from its file if need be).
    pub fn validate(&self) -> Result<String, ConfigError> {
        let upstream = url::Url::parse(&self.upstream_url).map_err(|e| {
            ConfigError::Invalid(format!("upstream_url {:?}: {e}", self.upstream_url))
        })?;
        if !matches!(upstream.scheme(), "ws" | "wss") {
            return Err(ConfigError::Invalid(format!(
                "upstream_url must be ws:// or wss://, got {:?}",
                self.upstream_url
            )));
        }
        let url = &self.control_grpc_url;
        if !((url.starts_with("http://") || url.starts_with("https://"))
            && url::Url::parse(url).is_ok_and(|u| u.has_host()))
        {
            return Err(ConfigError::Invalid(format!(
                "control_grpc_url must be an http:// or https:// URL (control admits every \
                 session), got {:?}",
                self.control_grpc_url
            )));
        }
        if self.ladder.is_empty() {
            return Err(ConfigError::Invalid(
                "ladder needs at least one step".into(),
            ));
        }
        for pair in self.ladder.windows(2) {
            if pair[1].max_participants <= pair[0].max_participants
                || pair[1].max_height > pair[0].max_height
            {
                return Err(ConfigError::Invalid(format!(
                    "ladder steps must grow in max_participants and not grow in max_height: \
                     {:?} then {:?}",
                    pair[0], pair[1]
                )));
            }
        }
        if self.ladder.iter().any(|s| s.max_height < 90) {
            return Err(ConfigError::Invalid(
                "ladder max_height must be at least 90".into(),
            ));
        }
        self.fallback.validate().map_err(ConfigError::Invalid)?;
        if !(5..=3000).contains(&self.ticket_renew_interval_secs) {
            return Err(ConfigError::Invalid(
                "ticket_renew_interval_secs must be 5 to 3000 (less than control's call.token_ttl)"
                    .into(),
            ));
        }
        if !(15..=600).contains(&self.browser_silence_timeout_secs) {
            return Err(ConfigError::Invalid(
                "browser_silence_timeout_secs must be 15 to 600 (livekit-client pings every few \
                 seconds)"
                    .into(),
            ));
        }
        if self.session_rate_per_minute > 0 && self.session_rate_burst == 0 {
            return Err(ConfigError::Invalid(
                "session_rate_burst must be at least 1 (or session_rate_per_minute = 0 to \
                 disable the limit)"
                    .into(),
            ));
        }
        self.http.validate("http").map_err(ConfigError::Invalid)?;
        if self.max_frame_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid(
                "max_frame_bytes must be at least 65536".into(),
            ));
        }
        let credential = match (&self.control_credential, &self.control_credential_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "both control_credential and control_credential_file are set; set exactly one"
                        .into(),
                ));
            }
            (Some(s), None) => Some(s.clone()),
            (None, Some(path)) => {
                let s = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read control_credential_file {}: {e}",
                        path.display()
                    ))
                })?;
                Some(s.trim_end_matches(['\n', '\r']).to_owned())
            }
            (None, None) => None,
        };
        let Some(credential) = credential else {
            return Err(ConfigError::Invalid(
                "control_credential (or control_credential_file) is required: the same value as \
                 control's gateway_credential"
                    .into(),
            ));
        };
        koinos_proto::gateway_credential::check("control_credential", &credential)
            .map_err(ConfigError::Invalid)?;
        Ok(credential)
    }

    pub fn ladder_config(&self) -> crate::ladder::LadderConfig {
        crate::ladder::LadderConfig {
            steps: self
                .ladder
                .iter()
                .map(|s| (s.max_participants, s.max_height))
                .collect(),
        }
    }

    /// LiveKit's HTTP base (for the validate endpoints), derived from the WebSocket URL.
    pub fn upstream_http_base(&self) -> String {
        let url = self.upstream_url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            url.to_owned()
        }
    }

    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(origin) => self
                .allowed_origins
                .iter()
                .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIAL: &str = "gateway-credential-gateway-credential-0123";

    fn valid() -> Config {
        Config {
            control_credential: Some(CREDENTIAL.into()),
            ..Config::default()
        }
    }

    #[test]
    fn control_and_its_credential_are_required() {
        assert_eq!(valid().validate().unwrap(), CREDENTIAL);
        let mut c = valid();
        c.control_credential = None;
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("control_credential"), "{error}");
        let mut c = valid();
        c.control_grpc_url = String::new();
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("control admits every session"), "{error}");

        let mut c = valid();
        c.control_credential = Some("too-short".into());
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("at least"), "{error}");
        assert!(!error.contains("too-short"), "never echoed: {error}");
        c.control_credential_file = Some("/nonexistent".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
    }

    #[test]
    fn the_credential_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("koinos-gw-cred-{}", std::process::id()));
        std::fs::write(&path, format!("{CREDENTIAL}\n")).unwrap();
        let c = Config {
            control_credential_file: Some(path.clone()),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap(), CREDENTIAL);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_old_configuration_with_livekit_keys_says_what_replaced_them() {
        let path = std::env::temp_dir().join(format!("koinos-gw-old-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "api_key = \"devkey\"\napi_secret_file = \"/run/secrets/livekit\"\n",
        )
        .unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        let _ = std::fs::remove_file(path);
        assert!(error.contains("found: api_key, api_secret_file"), "{error}");
        assert!(error.contains("holds no LiveKit credential"), "{error}");
        assert!(error.contains("control_credential_file"), "{error}");
        assert!(error.contains("gateway_credential"), "{error}");
    }

    #[test]
    fn an_old_configuration_with_revocation_memory_says_why_it_went() {
        let path = std::env::temp_dir().join(format!("koinos-gw-mem-{}.toml", std::process::id()));
        std::fs::write(&path, "revocation_memory_secs = 3600\n").unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        let _ = std::fs::remove_file(path);
        assert!(
            error.contains("revocation_memory_secs is no longer"),
            "{error}"
        );
    }

    #[test]
    fn limits_and_timers_are_checked_by_name() {
        let mut c = valid();
        c.ticket_renew_interval_secs = 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("ticket_renew_interval_secs")
        );
        let mut c = valid();
        c.browser_silence_timeout_secs = 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("browser_silence_timeout_secs")
        );
        let mut c = valid();
        c.http.header_timeout = std::time::Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("http.header_timeout")
        );
    }

    #[test]
    fn upstream_must_be_websocket() {
        let mut c = valid();
        c.upstream_url = "http://127.0.0.1:7881".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("upstream_url")
        );
    }

    #[test]
    fn http_base_follows_scheme() {
        let mut c = valid();
        assert_eq!(c.upstream_http_base(), "http://127.0.0.1:7881");
        c.upstream_url = "wss://lk.example/".into();
        assert_eq!(c.upstream_http_base(), "https://lk.example");
    }

    #[test]
    fn ladder_steps_must_be_ordered() {
        let mut c = valid();
        assert_eq!(c.ladder_config(), crate::ladder::LadderConfig::default());
        c.ladder.swap(0, 1);
        assert!(c.validate().unwrap_err().to_string().contains("ladder"));
    }

    #[test]
    fn fallback_settings_are_read_and_checked() {
        let parse = |toml: &str| -> Config {
            Figment::from(Serialized::defaults(valid()))
                .merge(Toml::string(toml))
                .extract()
                .expect("parses")
        };
        let config = parse("[fallback]\nenter_after_secs = 4\nsettle_secs = 0\n");
        assert_eq!(config.fallback.enter_after_secs, 4);
        assert_eq!(config.fallback.settle_secs, 0);
        assert_eq!(config.fallback.restore_after_secs, 20);
        assert!(config.validate().is_ok());
        let config = parse("[fallback]\nrestore_after_secs = 0\n");
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("restore_after_secs"), "{error}");
        let unknown = Figment::from(Serialized::defaults(valid()))
            .merge(Toml::string("[fallback]\nenter_after = 4\n"))
            .extract::<Config>();
        assert!(unknown.unwrap_err().to_string().contains("enter_after"));
    }

    #[test]
    fn origin_allow_list() {
        let c = valid();
        assert!(c.origin_allowed(None));
        assert!(c.origin_allowed(Some("http://localhost:8080")));
        assert!(!c.origin_allowed(Some("https://evil.example")));
    }
}

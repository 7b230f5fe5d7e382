//! Control-plane configuration: one typed struct, read from an optional TOML file and then
//! from `KOINOS_CONTROL_*` environment variables (nested keys joined with `__`, e.g.
//! `KOINOS_CONTROL_LIVEKIT__API_KEY`). Secrets may be given inline for development or, as
//! production should, through `*_file` settings naming a file that holds only the secret.
//! Loading fails fast with a message naming the offending setting.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the REST API, the web page and the health/metrics endpoints.
    pub http_listen: SocketAddr,
    /// Address of the gRPC API.
    pub grpc_listen: SocketAddr,
    /// Directory holding the built web page (`web/dist`); empty disables serving it.
    pub web_dir: Option<PathBuf>,
    /// The MatrixRTC transport URL handed to the page in `/config.json`
    /// (the `livekit_service_url` clients advertise in their call membership).
    pub public_rtc_service_url: String,
    /// The shared secret gateways present to the gateway RPCs (`WatchRevocations` and the
    /// RoomService calls made on their behalf). No LiveKit key: only control holds that. Unset,
    /// every gateway RPC is refused.
    pub gateway_credential: Option<String>,
    pub gateway_credential_file: Option<PathBuf>,
    /// Origins the page may connect to besides its own, the homeserver and the gateway (which
    /// are added from `homeserver.public_url` and `livekit.public_url`): further gateways of a
    /// scaled-out deployment reached under other names. Content-Security-Policy source
    /// expressions (`wss://rtc2.example.org`).
    pub web_connect_src: Vec<String>,
    pub homeserver: HomeserverConfig,
    pub livekit: LiveKitConfig,
    pub call: CallConfig,
    pub turn: TurnConfig,
    /// The REST listener (`http_listen`): connection limits and timeouts.
    pub http: koinos_net::ServeLimits,
    /// The gRPC listener (`grpc_listen`), which gateways keep long-lived streams on.
    pub grpc: koinos_net::ServeLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-server API base URL of the homeserver, as control reaches it.
    pub url: String,
    /// URL the browser uses for the homeserver (put in `/config.json`); defaults to `url`.
    pub public_url: Option<String>,
    /// The homeserver's server name; OpenID tokens naming any other server are refused.
    pub server_name: String,
    /// Localpart or full user id of control's service account.
    pub service_user: String,
    pub service_password: Option<String>,
    pub service_password_file: Option<PathBuf>,
    /// Device id control logs in with, so that restarts reuse one device.
    pub service_device_id: String,
    /// After this long without a successful sync, membership is "unknown" and control
    /// refuses every request (fail closed) until sync recovers.
    #[serde(with = "secs")]
    pub max_sync_staleness: Duration,
    /// How long the homeserver's OpenID tokens live (Synapse and Tuwunel: 3600 s). A redeemed
    /// token is remembered this long so that it cannot be redeemed again.
    #[serde(with = "secs")]
    pub openid_token_lifetime: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitConfig {
    /// LiveKit's HTTP API (RoomService), as control reaches it.
    pub api_url: String,
    /// The signalling URL given to clients: the gateway, not LiveKit itself.
    pub public_url: String,
    pub api_key: String,
    pub api_secret: Option<String>,
    pub api_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallConfig {
    /// Largest call LiveKit admits; the design's ladder stops at 6.
    pub max_participants: u32,
    /// Lifetime of an issued call ticket (what `/token` answers): how long it can open a new
    /// connection. A connected client is handed renewed tickets while its user stays a member.
    #[serde(with = "secs")]
    pub token_ttl: Duration,
    /// Lifetime of the LiveKit token control mints for one connection a gateway admits (LiveKit
    /// checks it when the connection opens; it never reaches the client).
    #[serde(with = "secs")]
    pub session_token_ttl: Duration,
    /// How many devices of one Matrix user may be in one call at once (a laptop and a phone):
    /// one member cannot take every seat with made-up device ids.
    pub max_devices_per_user: u32,
    /// How long a connection the gateway is opening holds its seat before LiveKit lists it.
    #[serde(with = "secs")]
    pub seat_hold: Duration,
    /// How often every call is checked against the membership state (LiveKit's
    /// `participant_joined` webhook also triggers it): someone in a call who is not a joined
    /// member is out within this.
    #[serde(with = "secs")]
    pub enforce_interval: Duration,
    /// Requests (tokens, TURN, end call) a user may make at once…
    pub rate_limit_burst: u32,
    /// …and how many a minute after that.
    pub rate_limit_per_minute: u32,
    /// Requests one client address may make at once before the caller is authenticated (each
    /// costs a homeserver lookup)…
    pub rate_limit_per_address_burst: u32,
    /// …and how many a minute after that (0 disables the limit).
    pub rate_limit_per_address_per_minute: u32,
    /// How long LiveKit keeps an empty room before closing it.
    #[serde(with = "secs")]
    pub empty_timeout: Duration,
    /// A call membership whose device has had no participant in the call for this long is
    /// cleared by control (no ghosts on homeservers without MSC4140 delayed events). Longer
    /// than a client's reconnect or reload.
    #[serde(with = "secs")]
    pub ghost_after: Duration,
    /// How often every call is reconciled against LiveKit (LiveKit's webhooks also trigger it).
    #[serde(with = "secs")]
    pub reconcile_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// TURN URIs handed out with credentials (`turn:` / `turns:`).
    pub uris: Vec<String>,
    /// Lifetime of issued TURN credentials.
    #[serde(with = "secs")]
    pub ttl: Duration,
    /// coturn's `static-auth-secret`.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:8080".parse().expect("literal address"),
            grpc_listen: "127.0.0.1:50051".parse().expect("literal address"),
            web_dir: None,
            public_rtc_service_url: "http://localhost:8080/api/rtc".into(),
            gateway_credential: None,
            gateway_credential_file: None,
            web_connect_src: vec![],
            homeserver: HomeserverConfig {
                url: "http://localhost:8008".into(),
                public_url: None,
                server_name: "localhost".into(),
                service_user: "koinos-rtc".into(),
                service_password: None,
                service_password_file: None,
                service_device_id: "KOINOSRTC".into(),
                max_sync_staleness: Duration::from_secs(90),
                openid_token_lifetime: Duration::from_secs(3600),
            },
            livekit: LiveKitConfig {
                api_url: "http://localhost:7881".into(),
                public_url: "ws://localhost:7880".into(),
                api_key: String::new(),
                api_secret: None,
                api_secret_file: None,
            },
            call: CallConfig {
                max_participants: 6,
                token_ttl: Duration::from_secs(600),
                session_token_ttl: Duration::from_secs(60),
                max_devices_per_user: 2,
                seat_hold: Duration::from_secs(10),
                enforce_interval: Duration::from_secs(1),
                rate_limit_burst: 30,
                rate_limit_per_minute: 30,
                rate_limit_per_address_burst: 50,
                rate_limit_per_address_per_minute: 300,
                empty_timeout: Duration::from_secs(120),
                ghost_after: Duration::from_secs(30),
                reconcile_interval: Duration::from_secs(10),
            },
            turn: TurnConfig {
                uris: vec![
                    "turn:localhost:3478?transport=udp".into(),
                    "turn:localhost:3478?transport=tcp".into(),
                ],
                ttl: Duration::from_secs(3600),
                secret: None,
                secret_file: None,
            },
            http: koinos_net::ServeLimits::default(),
            grpc: koinos_net::ServeLimits {
                max_connections: 256,
                max_connections_per_address: 64,
                idle_timeout: Duration::from_secs(300),
                ..koinos_net::ServeLimits::default()
            },
        }
    }
}

/// Secrets resolved from inline values or files; kept out of `Config` so that `Config` can be
/// printed in logs without leaking them.
#[derive(Clone)]
pub struct Secrets {
    pub service_password: String,
    pub livekit_api_secret: String,
    pub turn_secret: String,
    /// `None`: no gateway credential configured, so gateways are refused.
    pub gateway_credential: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read {setting} from {path}: {source}")]
    SecretFile {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Defaults, then the TOML file (if given), then `KOINOS_CONTROL_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<(Self, Secrets), ConfigError> {
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
        figment = figment.merge(Env::prefixed("KOINOS_CONTROL_").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        let secrets = config.validate()?;
        Ok((config, secrets))
    }

    fn validate(&self) -> Result<Secrets, ConfigError> {
        for (name, value) in [
            ("homeserver.url", &self.homeserver.url),
            ("livekit.api_url", &self.livekit.api_url),
            ("public_rtc_service_url", &self.public_rtc_service_url),
        ] {
            let url = url::Url::parse(value).map_err(|e| {
                ConfigError::Invalid(format!("{name} = {value:?} is not a URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be http(s), got {value:?}"
                )));
            }
        }
        let public = url::Url::parse(&self.livekit.public_url).map_err(|e| {
            ConfigError::Invalid(format!(
                "livekit.public_url = {:?} is not a URL: {e}",
                self.livekit.public_url
            ))
        })?;
        if !matches!(public.scheme(), "ws" | "wss") {
            return Err(ConfigError::Invalid(format!(
                "livekit.public_url must be ws:// or wss:// (the gateway), got {:?}",
                self.livekit.public_url
            )));
        }
        if self.homeserver.server_name.is_empty() {
            return Err(ConfigError::Invalid(
                "homeserver.server_name is required".into(),
            ));
        }
        if self.livekit.api_key.is_empty() {
            return Err(ConfigError::Invalid("livekit.api_key is required".into()));
        }
        if !(2..=6).contains(&self.call.max_participants) {
            return Err(ConfigError::Invalid(format!(
                "call.max_participants must be between 2 and 6 (the quality ladder's range), got {}",
                self.call.max_participants
            )));
        }
        if self.turn.uris.is_empty() {
            return Err(ConfigError::Invalid(
                "turn.uris must list at least one URI".into(),
            ));
        }
        if let Some(bad) = self
            .turn
            .uris
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(ConfigError::Invalid(format!(
                "turn.uris entries must start with turn: or turns:, got {bad:?}"
            )));
        }
        if self.turn.ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "turn.ttl must be at least 60 seconds".into(),
            ));
        }
        if self.call.rate_limit_burst == 0 || self.call.rate_limit_per_minute == 0 {
            return Err(ConfigError::Invalid(
                "call.rate_limit_burst and call.rate_limit_per_minute must be at least 1".into(),
            ));
        }
        if self.homeserver.openid_token_lifetime < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "homeserver.openid_token_lifetime must be at least 60 seconds (it must cover \
                 the homeserver's own OpenID token lifetime)"
                    .into(),
            ));
        }
        if self.call.ghost_after < Duration::from_secs(5) {
            return Err(ConfigError::Invalid(
                "call.ghost_after must be at least 5 seconds (a reconnecting client would lose \
                 its call membership)"
                    .into(),
            ));
        }
        if self.call.reconcile_interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "call.reconcile_interval must be at least 1 second".into(),
            ));
        }
        if self.call.token_ttl < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "call.token_ttl must be at least 60 seconds".into(),
            ));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(600))
            .contains(&self.call.session_token_ttl)
        {
            return Err(ConfigError::Invalid(
                "call.session_token_ttl must be 10 to 600 seconds (it only has to last until \
                 LiveKit accepts the connection)"
                    .into(),
            ));
        }
        if !(1..=self.call.max_participants).contains(&self.call.max_devices_per_user) {
            return Err(ConfigError::Invalid(format!(
                "call.max_devices_per_user must be 1 to call.max_participants ({})",
                self.call.max_participants
            )));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&self.call.seat_hold) {
            return Err(ConfigError::Invalid(
                "call.seat_hold must be 1 to 120 seconds".into(),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.call.enforce_interval)
        {
            return Err(ConfigError::Invalid(
                "call.enforce_interval must be 1 to 60 seconds".into(),
            ));
        }
        if self.call.rate_limit_per_address_per_minute > 0
            && self.call.rate_limit_per_address_burst == 0
        {
            return Err(ConfigError::Invalid(
                "call.rate_limit_per_address_burst must be at least 1 (or set \
                 call.rate_limit_per_address_per_minute = 0 to disable the limit)"
                    .into(),
            ));
        }
        self.http.validate("http").map_err(ConfigError::Invalid)?;
        self.grpc.validate("grpc").map_err(ConfigError::Invalid)?;
        if let Some(bad) = self.web_connect_src.iter().find(|s| {
            s.is_empty()
                || s.chars()
                    .any(|c| c.is_whitespace() || matches!(c, ';' | ',' | '\''))
        }) {
            return Err(ConfigError::Invalid(format!(
                "web_connect_src entries must be single CSP source expressions, got {bad:?}"
            )));
        }
        Ok(Secrets {
            service_password: secret(
                "homeserver.service_password",
                &self.homeserver.service_password,
                &self.homeserver.service_password_file,
            )?,
            livekit_api_secret: secret(
                "livekit.api_secret",
                &self.livekit.api_secret,
                &self.livekit.api_secret_file,
            )?,
            turn_secret: secret("turn.secret", &self.turn.secret, &self.turn.secret_file)?,
            gateway_credential: match (&self.gateway_credential, &self.gateway_credential_file) {
                (None, None) => None,
                (inline, file) => {
                    let credential = secret("gateway_credential", inline, file)?;
                    koinos_proto::gateway_credential::check("gateway_credential", &credential)
                        .map_err(ConfigError::Invalid)?;
                    Some(credential)
                }
            },
        })
    }
}

fn secret(
    setting: &'static str,
    inline: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<String, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "both {setting} and {setting}_file are set; set exactly one"
        ))),
        (Some(value), None) if !value.is_empty() => Ok(value.clone()),
        (None, Some(path)) => {
            let value =
                std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                    setting,
                    path: path.clone(),
                    source,
                })?;
            let value = value.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{setting}_file {} is empty",
                    path.display()
                )));
            }
            Ok(value)
        }
        _ => Err(ConfigError::Invalid(format!(
            "{setting} (or {setting}_file) is required"
        ))),
    }
}

/// Durations are whole seconds in the file and the environment.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secrets() -> Config {
        let mut c = Config::default();
        c.livekit.api_key = "key".into();
        c.livekit.api_secret = Some("s".repeat(32));
        c.homeserver.service_password = Some("pw".into());
        c.turn.secret = Some("turn".into());
        c
    }

    #[test]
    fn defaults_with_secrets_are_valid() {
        with_secrets().validate().unwrap();
    }

    #[test]
    fn missing_secret_names_the_setting() {
        let mut c = with_secrets();
        c.livekit.api_secret = None;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("livekit.api_secret"), "{err}");
    }

    #[test]
    fn inline_and_file_secret_is_contradictory() {
        let mut c = with_secrets();
        c.homeserver.service_password_file = Some("/nonexistent".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("koinos-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut c = with_secrets();
        c.livekit.api_secret = None;
        c.livekit.api_secret_file = Some(path);
        assert_eq!(c.validate().unwrap().livekit_api_secret, "from-file");
    }

    #[test]
    fn the_gateway_credential_is_optional_but_checked_when_given() {
        assert_eq!(with_secrets().validate().unwrap().gateway_credential, None);
        let mut c = with_secrets();
        c.gateway_credential = Some("g".repeat(40));
        assert_eq!(
            c.validate().unwrap().gateway_credential,
            Some("g".repeat(40))
        );
        c.gateway_credential = Some("short".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("gateway_credential must be at least"), "{err}");
        assert!(!err.contains("short"), "the value is never echoed: {err}");
        c.gateway_credential_file = Some("/nonexistent".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn public_livekit_url_must_be_websocket() {
        let mut c = with_secrets();
        c.livekit.public_url = "http://localhost:7880".into();
        assert!(c.validate().unwrap_err().to_string().contains("ws://"));
    }

    #[test]
    fn turn_uris_must_be_turn_uris() {
        let mut c = with_secrets();
        c.turn.uris = vec!["stun:localhost:3478".into()];
        assert!(c.validate().unwrap_err().to_string().contains("turn.uris"));
    }

    #[test]
    fn connection_limits_and_seat_rules_are_checked_by_name() {
        let mut c = with_secrets();
        c.http.max_connections_per_address = c.http.max_connections + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("http.max_connections_per_address")
        );
        let mut c = with_secrets();
        c.grpc.idle_timeout = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("grpc.idle_timeout")
        );
        let mut c = with_secrets();
        c.call.max_devices_per_user = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_devices_per_user")
        );
        let mut c = with_secrets();
        c.web_connect_src = vec!["wss://a.example; script-src *".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("web_connect_src")
        );
    }

    #[test]
    fn limits_are_read_from_toml() {
        let config: Config = Figment::from(Serialized::defaults(with_secrets()))
            .merge(Toml::string(
                "[http]\nmax_connections = 10\nmax_connections_per_address = 5\n\
                 header_timeout = 3\nbody_timeout = 4\nidle_timeout = 30\n\
                 trusted_proxies = [\"10.0.0.0/8\"]\n",
            ))
            .extract()
            .unwrap();
        assert_eq!(config.http.max_connections, 10);
        assert_eq!(config.http.idle_timeout, Duration::from_secs(30));
        assert!(config.http.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        config.validate().unwrap();
    }

    #[test]
    fn max_participants_is_bounded_by_the_ladder() {
        let mut c = with_secrets();
        c.call.max_participants = 7;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_participants")
        );
    }
}

//! Proving a caller's Matrix identity with an OpenID token (MSC1961 / the federation
//! `openid/userinfo` endpoint), the way lk-jwt-service does.

use std::time::Duration;

use async_trait::async_trait;
use matrix_sdk::ruma::OwnedUserId;
use serde::Deserialize;
use tracing::warn;

use crate::{error::ApiError, service::OpenIdToken};

#[async_trait]
pub trait OpenIdVerifier: Send + Sync {
    /// The Matrix user the token belongs to, or `Unauthorized`.
    async fn verify(&self, token: &OpenIdToken) -> Result<OwnedUserId, ApiError>;
}

/// Asks the one configured homeserver. Tokens naming another server are refused outright:
/// control never contacts a server a caller names (no SSRF, no federation trust).
pub struct HomeserverOpenId {
    http: reqwest::Client,
    userinfo_url: url::Url,
    server_name: String,
}

impl HomeserverOpenId {
    pub fn new(homeserver_url: &str, server_name: &str) -> anyhow::Result<Self> {
        let base = url::Url::parse(homeserver_url)?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            userinfo_url: base.join("/_matrix/federation/v1/openid/userinfo")?,
            server_name: server_name.to_owned(),
        })
    }
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
}

#[async_trait]
impl OpenIdVerifier for HomeserverOpenId {
    async fn verify(&self, token: &OpenIdToken) -> Result<OwnedUserId, ApiError> {
        if token.matrix_server_name != self.server_name {
            return Err(ApiError::Unauthorized);
        }
        let response = self
            .http
            .get(self.userinfo_url.clone())
            .query(&[("access_token", token.access_token.as_str())])
            .send()
            .await
            .map_err(|e| {
                // reqwest errors carry the URL, which carries the token: log without it.
                warn!(error = %e.without_url(), "homeserver unreachable for OpenID check");
                ApiError::Unavailable
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized);
        }
        if !status.is_success() {
            warn!(%status, "homeserver refused the OpenID check");
            return Err(ApiError::Unavailable);
        }
        let info: UserInfo = response.json().await.map_err(|e| {
            warn!(error = %e.without_url(), "malformed OpenID userinfo response");
            ApiError::Unavailable
        })?;
        let user = OwnedUserId::try_from(info.sub).map_err(|_| ApiError::Unauthorized)?;
        if user.server_name().as_str() != self.server_name {
            return Err(ApiError::Unauthorized);
        }
        Ok(user)
    }
}

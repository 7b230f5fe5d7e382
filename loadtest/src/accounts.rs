//! The Matrix side of a run: practitioners and case rooms made for it on the homeserver, and
//! each participant's way to a LiveKit token — an OpenID token from the homeserver, exchanged
//! at control's `POST /api/rtc/token`, exactly as the web page does.
//!
//! Accounts are registered with Synapse's shared-secret admin API (the dev stack's
//! registration secret), so a run needs no open registration. Each run names its accounts and
//! rooms after its run id, so runs never share state.

use anyhow::{Context, Result, bail};
use ring::hmac;
use serde::Deserialize;
use serde_json::{Value, json};

/// `creation_content.type` of a case room (design.md).
use koinos_proto::contract::case_room;

/// Control's service account: it must be in every case room (control reads membership as it).
const SERVICE_ACCOUNT: &str = "koinos-rtc";

pub struct Homeserver {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
}

/// A LiveKit token as control issues it.
#[derive(Debug, Clone, Deserialize)]
pub struct RtcToken {
    pub url: String,
    pub jwt: String,
    pub identity: String,
}

/// A refusal from control or the homeserver, kept whole for the report.
#[derive(Debug, thiserror::Error)]
#[error("{what}: HTTP {status} {errcode} {message}")]
pub struct Refused {
    pub what: &'static str,
    pub status: u16,
    pub errcode: String,
    pub message: String,
}

async fn json_or_refusal(what: &'static str, response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    Err(Refused {
        what,
        status: status.as_u16(),
        errcode: body["errcode"].as_str().unwrap_or("").to_owned(),
        message: body["error"].as_str().unwrap_or("").to_owned(),
    }
    .into())
}

impl Homeserver {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    async fn post(
        &self,
        what: &'static str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the homeserver at {}", self.base))?;
        json_or_refusal(what, response).await
    }

    /// Registers `localpart` (if it is new) through the shared-secret admin API.
    pub async fn register(&self, secret: &str, localpart: &str, password: &str) -> Result<()> {
        let nonce: Value = self
            .http
            .get(format!("{}/_synapse/admin/v1/register", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach the homeserver at {}", self.base))?
            .json()
            .await
            .context("the homeserver's registration nonce")?;
        let nonce = nonce["nonce"]
            .as_str()
            .context("no registration nonce: is this Synapse with a registration secret?")?;
        let mac = registration_mac(secret, nonce, localpart, password);
        let outcome = self
            .post(
                "register",
                "/_synapse/admin/v1/register",
                None,
                json!({"nonce": nonce, "username": localpart, "password": password, "admin": false, "mac": mac}),
            )
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .downcast_ref::<Refused>()
                    .is_some_and(|r| r.errcode == "M_USER_IN_USE") =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    pub async fn login(&self, localpart: &str, password: &str, device_id: &str) -> Result<Account> {
        let body = self
            .post(
                "login",
                "/_matrix/client/v3/login",
                None,
                json!({
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": localpart},
                    "password": password,
                    "device_id": device_id,
                    "initial_device_display_name": "koinos-loadtest",
                }),
            )
            .await?;
        Ok(Account {
            user_id: body["user_id"]
                .as_str()
                .context("login: no user_id")?
                .to_owned(),
            device_id: body["device_id"].as_str().unwrap_or(device_id).to_owned(),
            access_token: body["access_token"]
                .as_str()
                .context("login: no access_token")?
                .to_owned(),
        })
    }

    /// A case room created by `creator`, with `members` and control's service account invited,
    /// as the page and the seeding create them (`koinos_proto::contract::case_room`).
    pub async fn create_case(
        &self,
        creator: &Account,
        name: &str,
        members: &[&Account],
    ) -> Result<String> {
        let server = server_name(&creator.user_id)?;
        let service_account = format!("@{SERVICE_ACCOUNT}:{server}");
        let mut invite: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
        invite.push(service_account.clone());
        let room_version = self.default_room_version(creator).await?;
        let body = case_room::create_room_body(
            name,
            &creator.user_id,
            &service_account,
            &room_version,
            &invite,
        );
        let body = self
            .post(
                "create case room",
                "/_matrix/client/v3/createRoom",
                Some(&creator.access_token),
                body,
            )
            .await?;
        Ok(body["room_id"]
            .as_str()
            .context("createRoom: no room_id")?
            .to_owned())
    }

    /// The room version the homeserver gives new rooms ("" when it does not say).
    async fn default_room_version(&self, account: &Account) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/_matrix/client/v3/capabilities", self.base))
            .bearer_auth(&account.access_token)
            .send()
            .await
            .with_context(|| {
                format!("capabilities: cannot reach the homeserver at {}", self.base)
            })?;
        let body = json_or_refusal("capabilities", response).await?;
        Ok(body["capabilities"]["m.room_versions"]["default"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn join(&self, account: &Account, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", urlencode(room_id));
        self.post(
            "join case room",
            &path,
            Some(&account.access_token),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// A fresh OpenID token (control redeems each one once).
    pub async fn openid(&self, account: &Account) -> Result<Value> {
        let path = format!(
            "/_matrix/client/v3/user/{}/openid/request_token",
            urlencode(&account.user_id)
        );
        self.post(
            "OpenID token",
            &path,
            Some(&account.access_token),
            json!({}),
        )
        .await
    }
}

/// Fails with a clear message when nothing answers at control's REST base. Any HTTP answer will
/// do (a GET of the token operation is refused with 405): reachability is what is checked, without
/// a token request that control would count as a denial.
pub async fn control_reachable(http: &reqwest::Client, rtc_service_url: &str) -> Result<()> {
    let url = format!("{}/token", rtc_service_url.trim_end_matches('/'));
    http.get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach control at {url}"))?;
    Ok(())
}

/// Asks control for a LiveKit token for `account`'s device in `room_id`.
pub async fn rtc_token(
    http: &reqwest::Client,
    rtc_service_url: &str,
    room_id: &str,
    account: &Account,
    openid: Value,
) -> Result<RtcToken> {
    let url = format!("{}/token", rtc_service_url.trim_end_matches('/'));
    let response = http
        .post(&url)
        .json(&json!({"room_id": room_id, "openid_token": openid, "device_id": account.device_id}))
        .send()
        .await
        .with_context(|| format!("cannot reach control at {url}"))?;
    let body = json_or_refusal("LiveKit token", response).await?;
    serde_json::from_value(body).context("control's token answer")
}

/// HMAC-SHA1 over nonce, user, password and "notadmin", NUL-separated (Synapse's admin API).
fn registration_mac(secret: &str, nonce: &str, localpart: &str, password: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let message = format!("{nonce}\0{localpart}\0{password}\0notadmin");
    hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn server_name(user_id: &str) -> Result<&str> {
    match user_id.split_once(':') {
        Some((_, server)) if !server.is_empty() => Ok(server),
        _ => bail!("not a Matrix user id: {user_id}"),
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_mac_is_the_one_synapse_checks() {
        // Computed with Python's hmac the way dev/seed.py does (one update per part, NUL between).
        assert_eq!(
            registration_mac("secret", "abc", "user", "pass"),
            "25c1425a09ba61e53e40250a69b4b3cbe65af321"
        );
    }

    #[test]
    fn a_server_name_comes_from_the_user_id() {
        assert_eq!(server_name("@a:localhost").unwrap(), "localhost");
        assert!(server_name("nobody").is_err());
    }
}

//! AUTH, as nsqd does it: a client sends a secret, the broker asks an auth
//! server what the secret may do (or looks it up among static tokens), and
//! from then on SUB, PUB, MPUB and DPUB are checked against the answer.
//!
//! The auth server protocol is nsqd's (`internal/auth/authorizations.go`):
//! `GET http://<addr>/auth?remote_ip=&tls=&secret=&common_name=` (or a full
//! URL; or the same as a POST form), answered with
//! `{"ttl": secs, "identity", "identity_url", "authorizations": [{"topic":
//! regex, "channels": [regex], "permissions": ["subscribe", "publish"]}]}`.
//! A publish is allowed by an authorization with `publish` whose topic regex
//! matches and one of whose channel regexes matches the empty string, as in
//! nsqd. Answers are cached per connection until their TTL passes, then
//! asked again. Static tokens (`auth_tokens_file`) have the same shape and
//! never expire.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use regex::Regex;
use serde::Deserialize;
use tokio::time::Instant;
use triage_config::{AuthHttpRequestMethod, BrokerConfig, ConfigError};

/// One auth server request may take this long (nsqd's default request timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest auth server answer read.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No auth server answered usably; the reason is for the log only
    /// (clients get a bare "AUTH failed", as from nsqd).
    #[error("{0}")]
    Failed(String),
}

/// What an auth server answers, before checking.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<AnswerAuthorization>,
}

#[derive(Debug, Deserialize)]
struct AnswerAuthorization {
    topic: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    publish: bool,
    subscribe: bool,
}

impl Authorization {
    fn allows(&self, topic: &str, channel: Option<&str>) -> bool {
        let permitted = if channel.is_some() {
            self.subscribe
        } else {
            self.publish
        };
        permitted
            && self.topic.is_match(topic)
            && self
                .channels
                .iter()
                .any(|c| c.is_match(channel.unwrap_or("")))
    }
}

/// What a secret may do, and until when.
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: String,
    pub identity_url: String,
    authorizations: Vec<Authorization>,
    /// `None` for static tokens.
    expires: Option<Instant>,
}

impl Grant {
    /// May this client publish to `topic` (`channel` = `None`) or subscribe
    /// to `topic/channel`?
    pub fn allows(&self, topic: &str, channel: Option<&str>) -> bool {
        self.authorizations.iter().any(|a| a.allows(topic, channel))
    }

    pub fn is_expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    pub fn permission_count(&self) -> usize {
        self.authorizations.len()
    }
}

/// Checks an answer as nsqd does (known permissions, compiling regexes, a
/// positive TTL unless static) and turns it into a grant.
fn grant_from(answer: Answer, from_server: bool) -> Result<Grant, String> {
    let mut authorizations = Vec::with_capacity(answer.authorizations.len());
    for a in answer.authorizations {
        let (mut publish, mut subscribe) = (false, false);
        for p in &a.permissions {
            match p.as_str() {
                "publish" => publish = true,
                "subscribe" => subscribe = true,
                other => return Err(format!("unknown permission {other:?}")),
            }
        }
        let compile = |re: &str| {
            Regex::new(re).map_err(|e| {
                // regex draws the pattern over several lines; keep the reason.
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or("invalid").trim().to_owned();
                format!("unable to compile {re:?}: {reason}")
            })
        };
        authorizations.push(Authorization {
            topic: compile(&a.topic)?,
            channels: a
                .channels
                .iter()
                .map(|c| compile(c))
                .collect::<Result<_, _>>()?,
            publish,
            subscribe,
        });
    }
    let expires = if from_server {
        if answer.ttl <= 0 {
            return Err(format!("invalid TTL {} (must be > 0)", answer.ttl));
        }
        Some(Instant::now() + Duration::from_secs(answer.ttl as u64))
    } else {
        None
    };
    Ok(Grant {
        identity: answer.identity,
        identity_url: answer.identity_url,
        authorizations,
        expires,
    })
}

/// Who is asking, as the auth server is told.
#[derive(Debug, Clone)]
pub struct Asker {
    pub remote_ip: String,
    pub tls: bool,
    /// The client certificate's common name; empty without one.
    pub common_name: String,
}

/// The broker's AUTH settings: static tokens and auth servers.
#[derive(Debug)]
pub struct Auth {
    tokens: HashMap<String, Grant>,
    servers: Vec<String>,
    method: AuthHttpRequestMethod,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Auth {
    /// `None` when AUTH is off (no auth server, no tokens file).
    ///
    /// # Errors
    /// A tokens file that cannot be read or is not what an auth server
    /// would answer, naming `auth_tokens_file`.
    pub fn from_config(config: &BrokerConfig) -> Result<Option<Auth>, ConfigError> {
        if !config.requires_auth() {
            return Ok(None);
        }
        let mut tokens = HashMap::new();
        if let Some(path) = &config.auth_tokens_file {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "auth_tokens_file".into(),
                value: format!("{:?}", path.display().to_string()),
                reason,
                origin: None,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot be read: {e}")))?;
            let answers: HashMap<String, Answer> = serde_json::from_str(&text).map_err(|e| {
                invalid(format!(
                    "is not a JSON object from secret to an auth answer: {e}"
                ))
            })?;
            for (secret, answer) in answers {
                let grant = grant_from(answer, false)
                    .map_err(|e| invalid(format!("secret {}…: {e}", prefix(&secret))))?;
                tokens.insert(secret, grant);
            }
        }
        Ok(Some(Auth {
            tokens,
            servers: config.auth_http_addresses.clone(),
            method: config.auth_http_request_method,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }))
    }

    /// What `secret` may do: a static token's grant, or the first auth
    /// server (in random order) that answers usably.
    ///
    /// # Errors
    /// [`AuthError::Failed`] naming every server's failure, for the log.
    pub async fn check(&self, secret: &str, asker: &Asker) -> Result<Grant, AuthError> {
        if let Some(grant) = self.tokens.get(secret) {
            return Ok(grant.clone());
        }
        if self.servers.is_empty() {
            return Err(AuthError::Failed("unknown secret".into()));
        }
        let start = rand::random_range(0..self.servers.len());
        let mut failures = Vec::new();
        for i in 0..self.servers.len() {
            let server = &self.servers[(start + i) % self.servers.len()];
            match self.ask(server, secret, asker).await {
                Ok(grant) => return Ok(grant),
                Err(e) => failures.push(format!("{server}: {e}")),
            }
        }
        Err(AuthError::Failed(failures.join("; ")))
    }

    async fn ask(&self, server: &str, secret: &str, asker: &Asker) -> Result<Grant, String> {
        let endpoint = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}/auth")
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("remote_ip", &asker.remote_ip)
            .append_pair("tls", if asker.tls { "true" } else { "false" })
            .append_pair("secret", secret)
            .append_pair("common_name", &asker.common_name)
            .finish();
        let request = match self.method {
            AuthHttpRequestMethod::Get => Request::builder()
                .method(Method::GET)
                .uri(format!("{endpoint}?{form}"))
                .body(Full::new(Bytes::new())),
            AuthHttpRequestMethod::Post => Request::builder()
                .method(Method::POST)
                .uri(endpoint)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form))),
        }
        .map_err(|e| format!("bad request: {e}"))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))??;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| format!("bad answer: {e}"))?;
        grant_from(answer, true)
    }
}

/// The first characters of a secret, for an error message that must not
/// print the secret.
fn prefix(secret: &str) -> String {
    secret.chars().take(3).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn grants_follow_nsqds_rules() {
        let grant = grant_from(
            answer(
                r#"{"ttl": 60, "identity": "api", "authorizations": [
                    {"topic": "^tickets", "channels": [".*"], "permissions": ["publish"]},
                    {"topic": "^tickets$", "channels": ["^agents$"], "permissions": ["subscribe"]}
                ]}"#,
            ),
            true,
        )
        .unwrap();
        assert!(grant.allows("tickets", None));
        assert!(grant.allows("tickets.urgent", None));
        assert!(!grant.allows("billing", None));
        assert!(grant.allows("tickets", Some("agents")));
        assert!(!grant.allows("tickets", Some("audit")));
        assert!(!grant.allows("tickets.urgent", Some("agents")));
        assert_eq!(grant.permission_count(), 2);
        assert!(!grant.is_expired());
    }

    #[test]
    fn a_publish_needs_a_channel_regex_that_matches_nothing() {
        // As nsqd: a publish authorization whose channels cannot match ""
        // allows nothing.
        let grant = grant_from(
            answer(r#"{"ttl": 1, "authorizations": [{"topic": ".*", "channels": ["^c$"], "permissions": ["publish"]}]}"#),
            true,
        )
        .unwrap();
        assert!(!grant.allows("t", None));
    }

    #[test]
    fn bad_answers_are_refused() {
        for (json, needle) in [
            (r#"{"ttl": 0, "authorizations": []}"#, "TTL"),
            (
                r#"{"ttl": 5, "authorizations": [{"topic": "(", "permissions": []}]}"#,
                "compile",
            ),
            (
                r#"{"ttl": 5, "authorizations": [{"topic": ".*", "permissions": ["admin"]}]}"#,
                "permission",
            ),
        ] {
            let err = grant_from(answer(json), true).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        // Static tokens need no TTL.
        assert!(grant_from(answer(r#"{"authorizations": []}"#), false).is_ok());
    }
}

//! The admin API's client, used by the command-line subcommands: one HTTP
//! request per call, JSON in and out.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::limits::CLIENT_TIMEOUT;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot reach the node's admin API at {addr}: {reason} (is `ctx-node run` up, and is --admin right?)"
    )]
    Unreachable { addr: String, reason: String },
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

pub struct Client {
    addr: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(addr: &str) -> Client {
        Client::with_timeout(addr, CLIENT_TIMEOUT)
    }

    pub fn with_timeout(addr: &str, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build();
        Client {
            addr: addr.to_owned(),
            agent: config.into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.agent.get(self.url(path)).call();
        self.answer(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self.agent.post(self.url(path)).send_json(body);
        self.answer(response)
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut response = response.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| ClientError::Protocol(format!("status {status}, body {text:?}")))?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            Err(ClientError::Api { status, message })
        }
    }
}

// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The CLI's side of the API: one HTTP/1.1 request per call over the
//! agent's Unix socket.

use std::{io, path::PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;
use tokio::net::UnixStream;

use crate::api::ErrorBody;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot reach the netd agent at {socket} ({cause}): is it running? Start it with `netd agent`"
    )]
    Unreachable { socket: PathBuf, cause: io::Error },
    /// The agent answered with an error: printed with its hint, on the
    /// same line (one line per refusal).
    #[error("{message}{}", hint_suffix(.hint.as_deref()))]
    Api {
        status: u16,
        kind: String,
        message: String,
        hint: Option<String>,
    },
    #[error("talking to the netd agent at {socket}: {detail}")]
    Protocol { socket: PathBuf, detail: String },
}

impl ClientError {
    /// The machine-readable class of the error, for `--json` output.
    pub fn kind(&self) -> &str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Api { kind, .. } => kind,
            Self::Protocol { .. } => "protocol",
        }
    }

    /// What fixes it, when the agent said.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Api { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// `; hint: HINT`, or nothing.
fn hint_suffix(hint: Option<&str>) -> String {
    hint.map_or_else(String::new, |hint| format!("; hint: {hint}"))
}

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    fn protocol(&self, detail: impl ToString) -> ClientError {
        ClientError::Protocol {
            socket: self.socket.clone(),
            detail: detail.to_string(),
        }
    }

    /// Sends one request; the answer's body is the caller's to read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|cause| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    cause,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(connection);
        let payload = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| self.protocol(e))?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "netd")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| self.protocol(e))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))
    }

    /// Sends one request and decodes the answer as `R`.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<R, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = self.whole_body(response).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| self.protocol(format!("unexpected answer: {e}")));
        }
        Err(refusal(status, &bytes))
    }

    async fn whole_body(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes())
    }

    /// Opens a stream of JSON lines (`GET /v1/monitor`).
    pub async fn stream(&self, path: &str) -> Result<Lines, ClientError> {
        let response = self.send(Method::GET, path, None::<&()>).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(status, &self.whole_body(response).await?));
        }
        Ok(Lines {
            client: self.clone(),
            body: response.into_body(),
            pending: Vec::new(),
        })
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<R, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }
}

/// The error an agent's refusal (a 4xx or 5xx answer) says.
fn refusal(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(err) => ClientError::Api {
            status: status.as_u16(),
            kind: err.kind,
            message: err.message,
            hint: err.hint,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            kind: if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "internal"
            }
            .to_owned(),
            message: format!(
                "the agent answered {status}: {}",
                String::from_utf8_lossy(bytes)
            ),
            hint: None,
        },
    }
}

/// A streamed answer, line by line.
pub struct Lines {
    client: Client,
    body: hyper::body::Incoming,
    pending: Vec<u8>,
}

impl Lines {
    /// The next line (without its newline; the empty lines an idle stream
    /// keeps alive with skipped), or `None` once the agent ends the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=at).collect();
                line.pop();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(self.client.protocol(e)),
                None if self.pending.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.pending))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal prints as one line: the message, then its hint.
    #[test]
    fn a_refusal_prints_its_hint_on_the_same_line() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"message":"10.0.0.5 is already assigned to endpoint web","kind":"conflict","hint":"choose another address with --ip, or omit --ip to get a free one"}"#,
        )
        .expect("an error body");
        let err = ClientError::Api {
            status: 409,
            kind: body.kind,
            message: body.message,
            hint: body.hint,
        };
        assert_eq!(
            err.to_string(),
            "10.0.0.5 is already assigned to endpoint web; hint: choose another address with --ip, or omit --ip to get a free one"
        );
        assert_eq!(
            err.hint(),
            Some("choose another address with --ip, or omit --ip to get a free one")
        );
        let plain = ClientError::Api {
            status: 404,
            kind: "not_found".to_owned(),
            message: "no such API path".to_owned(),
            hint: None,
        };
        assert_eq!(plain.to_string(), "no such API path");
    }
}

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;

use crate::{ApiError, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Twill agent at {path}: {reason} (is twill-agent running? use --socket or $TWILL_SOCKET for another path)")]
    Unreachable { path: String, reason: String },
    #[error("talking to the Twill agent at {path}: {reason}")]
    Protocol { path: String, reason: String },
    #[error("{}", .0.message)]
    Agent(ApiError),
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self { socket: socket.as_ref().to_path_buf(), timeout: Duration::from_secs(120) }
    }

    /// Sends `request` and decodes the agent's answer as `T`.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        let value = self.call_value(request)?;
        serde_json::from_value(value).map_err(|e| self.protocol(e))
    }

    pub fn call_value(&self, request: &Request) -> Result<serde_json::Value, ClientError> {
        let path = self.socket.display().to_string();
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| ClientError::Unreachable { path: path.clone(), reason: e.to_string() })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| self.protocol(e))?;
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        stream.write_all(&line).map_err(|e| self.protocol(e))?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).map_err(|e| self.protocol(e))?;
        if reply.is_empty() {
            return Err(self.protocol("the agent closed the connection without answering"));
        }
        match serde_json::from_str::<Response>(&reply).map_err(|e| self.protocol(e))? {
            Response::Ok(value) => Ok(value),
            Response::Error(error) => Err(ClientError::Agent(error)),
        }
    }

    /// Sends a streaming request and calls `each` for every line the agent
    /// sends, until the agent closes the stream or `each` returns false.
    pub fn stream<T: DeserializeOwned>(
        &self,
        request: &Request,
        mut each: impl FnMut(T) -> bool,
    ) -> Result<(), ClientError> {
        let path = self.socket.display().to_string();
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| ClientError::Unreachable { path: path.clone(), reason: e.to_string() })?;
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        stream.write_all(&line).map_err(|e| self.protocol(e))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(|e| self.protocol(e))? == 0 {
                return Ok(());
            }
            // An error instead of a stream arrives as a Response.
            if let Ok(Response::Error(e)) = serde_json::from_str::<Response>(&line) {
                return Err(ClientError::Agent(e));
            }
            let item: T = serde_json::from_str(&line).map_err(|e| self.protocol(e))?;
            if !each(item) {
                return Ok(());
            }
        }
    }

    fn protocol(&self, reason: impl ToString) -> ClientError {
        ClientError::Protocol { path: self.socket.display().to_string(), reason: reason.to_string() }
    }
}

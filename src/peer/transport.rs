//! The HTTP/1.1 transport under surf: TCP (and later TLS) straight into async-h1.
//!
//! One connection per request with `Connection: close`: simple, and on loopback cheap enough.
//! surf's own client backends are not used (they bring curl, OpenSSL or an old rustls).

use http_client::{Config, Error, HttpClient, Request, Response};

#[derive(Debug, Default)]
pub struct Transport {
    config: Config,
}

#[async_trait::async_trait]
impl HttpClient for Transport {
    async fn send(&self, mut req: Request) -> Result<Response, Error> {
        let url = req.url().clone();
        let host = url.host_str().ok_or_else(|| Error::from_str(400, format!("no host in {url}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        if url.scheme() != "http" {
            return Err(Error::from_str(400, format!("unsupported scheme in {url}")));
        }
        let stream = async_net::TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        req.insert_header("connection", "close");
        async_h1::connect(stream, req).await
    }

    fn set_config(&mut self, config: Config) -> Result<(), Error> {
        self.config = config;
        Ok(())
    }

    fn config(&self) -> &Config {
        &self.config
    }
}

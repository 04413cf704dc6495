//! Where the stub is: `tcp:HOST:PORT`, `unix:PATH`, or a serial device
//! `/dev/ttyXXX[,BAUD]`, opened as a byte stream with a reader and a writer
//! half.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A parsed `--connect` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix { path: String },
    Serial { path: String, baud: u32 },
}

/// Why an endpoint could not be parsed or opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("`{0}` is not a connection: use tcp:HOST:PORT, unix:PATH or /dev/ttyXXX[,BAUD]")]
    BadSpec(String),
    #[error("bad port in `{0}`: expected a number 1-65535")]
    BadPort(String),
    #[error("bad baud rate in `{0}`: expected one of 9600, 19200, 38400, 57600, 115200, 230400")]
    BadBaud(String),
    #[error("cannot connect to {endpoint}: {source} (is QEMU running with the stub on that port?)")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("cannot open serial device {path}: {source}")]
    Serial {
        path: String,
        source: std::io::Error,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Endpoint::Unix { path } => write!(f, "unix:{path}"),
            Endpoint::Serial { path, baud } => write!(f, "{path},{baud}"),
        }
    }
}

const BAUDS: [u32; 6] = [9600, 19200, 38400, 57600, 115200, 230400];

impl std::str::FromStr for Endpoint {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| TransportError::BadSpec(s.to_string()))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| TransportError::BadPort(s.to_string()))?;
            let host = if host.is_empty() { "127.0.0.1" } else { host };
            return Ok(Endpoint::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(TransportError::BadSpec(s.to_string()));
            }
            return Ok(Endpoint::Unix {
                path: path.to_string(),
            });
        }
        if s.starts_with('/') {
            let (path, baud) = match s.split_once(',') {
                Some((p, b)) => {
                    let baud: u32 = b
                        .parse()
                        .ok()
                        .filter(|b| BAUDS.contains(b))
                        .ok_or_else(|| TransportError::BadBaud(s.to_string()))?;
                    (p, baud)
                }
                None => (s, 115200),
            };
            return Ok(Endpoint::Serial {
                path: path.to_string(),
                baud,
            });
        }
        Err(TransportError::BadSpec(s.to_string()))
    }
}

/// The write half plus a way to cut the connection (which wakes the reader).
pub trait Wire: Write + Send {
    /// Close both directions; a blocked reader returns.
    fn shutdown(&mut self);
}

impl Wire for TcpStream {
    fn shutdown(&mut self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
}

impl Wire for UnixStream {
    fn shutdown(&mut self) {
        let _ = UnixStream::shutdown(self, Shutdown::Both);
    }
}

impl Wire for std::fs::File {
    fn shutdown(&mut self) {}
}

/// An opened connection: read half for the reader thread, write half for
/// the client.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Wire>,
}

impl Endpoint {
    pub fn open(&self, timeout: Duration) -> Result<Opened, TransportError> {
        let connect_err = |source| TransportError::Connect {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Tcp { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(connect_err)?
                    .collect();
                let mut last = std::io::Error::other("no address");
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            let r = s.try_clone().map_err(connect_err)?;
                            return Ok(Opened {
                                reader: Box::new(r),
                                writer: Box::new(s),
                            });
                        }
                        Err(e) => last = e,
                    }
                }
                Err(connect_err(last))
            }
            Endpoint::Unix { path } => {
                let s = UnixStream::connect(path).map_err(connect_err)?;
                let r = s.try_clone().map_err(connect_err)?;
                Ok(Opened {
                    reader: Box::new(r),
                    writer: Box::new(s),
                })
            }
            Endpoint::Serial { path, baud } => {
                let serial_err = |source| TransportError::Serial {
                    path: path.clone(),
                    source,
                };
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(serial_err)?;
                crate::rsp::serial::make_raw(&f, *baud).map_err(serial_err)?;
                let r = f.try_clone().map_err(serial_err)?;
                Ok(Opened {
                    reader: Box::new(r),
                    writer: Box::new(f),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "tcp:127.0.0.1:1234".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 1234
            }
        );
        assert_eq!(
            "tcp::99".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 99
            }
        );
        assert_eq!(
            "unix:/tmp/s".parse::<Endpoint>().unwrap(),
            Endpoint::Unix {
                path: "/tmp/s".into()
            }
        );
        assert_eq!(
            "/dev/ttyS1,9600".parse::<Endpoint>().unwrap(),
            Endpoint::Serial {
                path: "/dev/ttyS1".into(),
                baud: 9600
            }
        );
        assert_eq!(
            "/dev/ttyUSB0".parse::<Endpoint>().unwrap(),
            Endpoint::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 115200
            }
        );
    }

    #[test]
    fn rejects_bad_endpoints() {
        for bad in [
            "tcp:host",
            "tcp:h:0",
            "tcp:h:x",
            "unix:",
            "/dev/ttyS0,12",
            "localhost:1",
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn connect_refused_names_the_endpoint() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ep = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let err = ep.open(Duration::from_secs(1)).err().unwrap().to_string();
        assert!(err.contains(&format!("tcp:127.0.0.1:{port}")), "{err}");
    }
}

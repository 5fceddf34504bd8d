//! The environment contract between the platform and a service (docs/api.md).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use tokio::net::TcpListener;

use crate::Error;

/// The service's name (the MicroService's name).
pub const ENV_NAME: &str = "MICRO_SERVICE_NAME";
/// The service's version (commit or image tag).
pub const ENV_VERSION: &str = "MICRO_SERVICE_VERSION";
/// The tenant the service runs in.
pub const ENV_NAMESPACE: &str = "MICRO_NAMESPACE";
/// Where to listen: `:<port>` (all interfaces) or `host:port`.
pub const ENV_ADDRESS: &str = "MICRO_SERVICE_ADDRESS";
/// Where the delivered Configs are mounted: `<dir>/<config>/config.json` and `secrets.json`.
pub const ENV_CONFIG_DIR: &str = "MICRO_CONFIG_DIR";

/// Listen address when `MICRO_SERVICE_ADDRESS` is unset: all interfaces, port 8080.
pub const DEFAULT_ADDRESS: &str = ":8080";
/// Version when `MICRO_SERVICE_VERSION` is unset (Micro's default ref).
pub const DEFAULT_VERSION: &str = "latest";
/// Tenant when `MICRO_NAMESPACE` is unset (Micro's default namespace).
pub const DEFAULT_NAMESPACE: &str = "micro";

/// Where a service listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `:<port>`: every interface, IPv6 and IPv4 where the host has IPv6, else IPv4 only.
    AllInterfaces {
        /// The TCP port; 0 picks a free one.
        port: u16,
    },
    /// `host:port`: one host name or IP literal (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`).
    Host {
        /// The host name or IP (without brackets).
        host: String,
        /// The TCP port; 0 picks a free one.
        port: u16,
    },
}

impl Address {
    /// The port to listen on.
    pub fn port(&self) -> u16 {
        match self {
            Self::AllInterfaces { port } | Self::Host { port, .. } => *port,
        }
    }

    /// Binds a listener on this address.
    pub async fn bind(&self) -> Result<TcpListener, Error> {
        let bound = match self {
            Self::AllInterfaces { port } => {
                // Like Go's ":8080": the IPv6 wildcard also accepts IPv4 (bindv6only=0, the Linux
                // default); hosts without IPv6 fall back to IPv4.
                match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port))).await {
                    Ok(listener) => Ok(listener),
                    Err(_) => TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port))).await,
                }
            }
            Self::Host { host, port } => TcpListener::bind((host.as_str(), *port)).await,
        };
        bound.map_err(|source| Error::Bind {
            address: self.to_string(),
            source,
        })
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| Error::Env {
            var: ENV_ADDRESS,
            reason: format!("{s:?}: {reason} (expected \":<port>\" or \"host:port\")"),
        };
        let (host, port) = s.trim().rsplit_once(':').ok_or_else(|| invalid("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Ok(Self::AllInterfaces { port });
        }
        if host.contains(['/', ' ', '[', ']']) {
            return Err(invalid("the host is not a host name or IP address"));
        }
        // An unbracketed IPv6 literal ("::1:8080") is ambiguous: ask for brackets.
        if host.contains(':') && s.trim().rsplit_once(':').is_some_and(|(h, _)| !h.starts_with('[')) {
            return Err(invalid("an IPv6 host must be in brackets, e.g. [::1]:8080"));
        }
        Ok(Self::Host {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllInterfaces { port } => write!(f, ":{port}"),
            Self::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Who the service is and where it listens, as the platform tells it through the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `MICRO_SERVICE_NAME`, else the name the service gave.
    pub name: String,
    /// `MICRO_SERVICE_VERSION`, else `latest`.
    pub version: String,
    /// `MICRO_NAMESPACE`, else `micro`.
    pub namespace: String,
    /// `MICRO_SERVICE_ADDRESS`, else `:8080`.
    pub address: Address,
    /// `MICRO_CONFIG_DIR`, when Configs are delivered to the pod.
    pub config_dir: Option<PathBuf>,
}

impl Options {
    /// Options for a service called `name` listening on `address`, with the defaults for the rest
    /// and no configuration: what tests start from.
    pub fn new(name: impl Into<String>, address: Address) -> Self {
        Self {
            name: name.into(),
            version: DEFAULT_VERSION.into(),
            namespace: DEFAULT_NAMESPACE.into(),
            address,
            config_dir: None,
        }
    }

    /// Reads the options from the process environment; `default_name` is used when
    /// `MICRO_SERVICE_NAME` is unset.
    pub fn from_env(default_name: &str) -> Result<Self, Error> {
        Self::from_lookup(default_name, |var| std::env::var(var).ok())
    }

    /// Reads the options through `lookup` (the environment, or a map in tests). Empty values count
    /// as unset.
    pub fn from_lookup(default_name: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |var: &str| lookup(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let name = get(ENV_NAME).unwrap_or_else(|| default_name.to_string());
        if name.is_empty() {
            return Err(Error::Env {
                var: ENV_NAME,
                reason: "no service name".into(),
            });
        }
        Ok(Self {
            name,
            version: get(ENV_VERSION).unwrap_or_else(|| DEFAULT_VERSION.into()),
            namespace: get(ENV_NAMESPACE).unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            address: get(ENV_ADDRESS).as_deref().unwrap_or(DEFAULT_ADDRESS).parse()?,
            config_dir: get(ENV_CONFIG_DIR).map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use super::*;

    fn host(h: &str, port: u16) -> Address {
        Address::Host { host: h.into(), port }
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            ":8080".parse::<Address>().unwrap(),
            Address::AllInterfaces { port: 8080 }
        );
        assert_eq!(" :0 ".parse::<Address>().unwrap(), Address::AllInterfaces { port: 0 });
        assert_eq!("127.0.0.1:8080".parse::<Address>().unwrap(), host("127.0.0.1", 8080));
        assert_eq!("localhost:9".parse::<Address>().unwrap(), host("localhost", 9));
        assert_eq!("[::1]:8080".parse::<Address>().unwrap(), host("::1", 8080));
        assert_eq!("[::]:8080".parse::<Address>().unwrap(), host("::", 8080));
        assert_eq!("0.0.0.0:80".parse::<Address>().unwrap(), host("0.0.0.0", 80));
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "8080",
            ":",
            ":http",
            ":65536",
            ":-1",
            "::1:8080",
            "a b:80",
            "host/x:80",
            "[::1:80",
        ] {
            let err = bad.parse::<Address>().unwrap_err();
            assert!(
                matches!(err, Error::Env { var: ENV_ADDRESS, .. }),
                "{bad:?} should be refused, got {err:?}"
            );
        }
    }

    #[test]
    fn displays_addresses_as_parsed() {
        for s in [":8080", "127.0.0.1:1", "[::1]:8080", "localhost:9"] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn reads_the_environment_contract() {
        let env: HashMap<&str, &str> = HashMap::from([
            (ENV_NAME, "greeter"),
            (ENV_VERSION, "v1.2.3"),
            (ENV_NAMESPACE, "acme"),
            (ENV_ADDRESS, ":9090"),
            (ENV_CONFIG_DIR, "/etc/microplane/config"),
        ]);
        let options = Options::from_lookup("helloworld", |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(
            options,
            Options {
                name: "greeter".into(),
                version: "v1.2.3".into(),
                namespace: "acme".into(),
                address: Address::AllInterfaces { port: 9090 },
                config_dir: Some("/etc/microplane/config".into()),
            }
        );
    }

    #[test]
    fn defaults_when_unset_or_empty() {
        let options = Options::from_lookup("helloworld", |k| (k == ENV_NAMESPACE).then(|| " ".to_string())).unwrap();
        assert_eq!(
            options,
            Options {
                name: "helloworld".into(),
                version: "latest".into(),
                namespace: "micro".into(),
                address: Address::AllInterfaces { port: 8080 },
                config_dir: None,
            }
        );
        assert!(Options::from_lookup("", |_| None).is_err(), "a service needs a name");
        let bad = Options::from_lookup("x", |k| (k == ENV_ADDRESS).then(|| "nope".to_string())).unwrap_err();
        assert!(bad.to_string().contains("MICRO_SERVICE_ADDRESS"), "{bad}");
    }

    #[tokio::test]
    async fn binds_loopback_and_all_interfaces() {
        let listener = host("127.0.0.1", 0).bind().await.unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());
        let any = Address::AllInterfaces { port: 0 }.bind().await.unwrap();
        assert!(any.local_addr().unwrap().ip().is_unspecified());
        let taken = listener.local_addr().unwrap().port();
        let err = host("127.0.0.1", taken).bind().await.unwrap_err();
        assert!(matches!(err, Error::Bind { .. }), "{err:?}");
    }
}

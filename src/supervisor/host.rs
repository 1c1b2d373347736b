//! Which host a node belongs to. One layout script runs on every host, each host's
//! supervisor starting its own part (SPEC §9): a node whose own endpoint in its
//! `cluster` layout (`cluster[name].host`) names another host is left to that host's
//! supervisor. A node with no endpoint of its own, or one with an empty host, is local.
//!
//! `ThisHost` is what "this host" means: the names given with `run --host`, or by
//! default the machine's host name, `localhost`, any loopback address and the
//! addresses of its interfaces (read once, when the supervisor starts: an address
//! added later is not known until it starts again).

use std::net::IpAddr;

use crate::config::NodeConfig;

/// The names and addresses that stand for this host in a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThisHost {
    /// Host names, lowercase, without a trailing dot.
    names: Vec<String>,
    addresses: Vec<IpAddr>,
    /// Loopback addresses (127.0.0.0/8, ::1) count: they always mean this machine.
    /// Off under `--host`, where only the names given count, so that two supervisors
    /// on one machine can play two hosts.
    loopback: bool,
}

impl ThisHost {
    /// The machine: its host name, `localhost`, loopback addresses and the addresses
    /// of its interfaces. What cannot be read is left out (and logged).
    pub fn machine() -> ThisHost {
        let mut names = vec!["localhost".to_string()];
        match nix::unistd::gethostname() {
            Ok(name) => match name.into_string() {
                Ok(name) if !name.is_empty() => names.push(name),
                Ok(_) => {}
                Err(name) => log::warn!("the host name {name:?} is not UTF-8; it is ignored"),
            },
            Err(e) => log::warn!(
                "cannot read the host name: {}",
                crate::process::errno_text(e)
            ),
        }
        let addresses = match interface_addresses() {
            Ok(addresses) => addresses,
            Err(e) => {
                log::warn!(
                    "cannot read the network interfaces' addresses: {}",
                    crate::process::errno_text(e)
                );
                Vec::new()
            }
        };
        ThisHost::new(names, addresses, true)
    }

    /// Exactly these names and addresses (`run --host NAME`).
    pub fn named(given: &[String]) -> ThisHost {
        let mut names = Vec::new();
        let mut addresses = Vec::new();
        for name in given {
            match address(name) {
                Some(ip) => addresses.push(ip),
                None => names.push(name.clone()),
            }
        }
        ThisHost::new(names, addresses, false)
    }

    fn new(names: Vec<String>, mut addresses: Vec<IpAddr>, loopback: bool) -> ThisHost {
        let mut names: Vec<String> = names.iter().map(|n| normal_name(n)).collect();
        names.sort();
        names.dedup();
        addresses.sort();
        addresses.dedup();
        ThisHost {
            names,
            addresses,
            loopback,
        }
    }

    /// Whether `host`, as a layout writes it (a name, an address, `[v6]`), is this one.
    /// An empty host names no other host, so it is this one.
    pub fn is_here(&self, host: &str) -> bool {
        let host = host.trim();
        if host.is_empty() {
            return true;
        }
        match address(host) {
            Some(ip) => (self.loopback && ip.is_loopback()) || self.addresses.contains(&ip),
            None => self.names.contains(&normal_name(host)),
        }
    }

    /// The host `config` belongs to when that is another one: the host of its own
    /// endpoint, if that is not this one.
    pub fn elsewhere<'a>(&self, config: &'a NodeConfig) -> Option<&'a str> {
        let endpoint = config.cluster.get(&config.name)?;
        (!self.is_here(&endpoint.host)).then_some(endpoint.host.as_str())
    }

    /// `vm, localhost, 192.0.2.2`, for the log.
    pub fn describe(&self) -> String {
        let mut all: Vec<String> = self.names.clone();
        all.extend(self.addresses.iter().map(IpAddr::to_string));
        if self.loopback {
            all.push("loopback addresses".into());
        }
        all.join(", ")
    }
}

/// Host names compare without case and without the root's trailing dot.
fn normal_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `host` as an address: `192.0.2.1`, `fd00::1`, `[fd00::1]`; an IPv4 address mapped
/// into IPv6 is the IPv4 address.
fn address(host: &str) -> Option<IpAddr> {
    let host = host.trim();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The addresses of the machine's interfaces (getifaddrs).
fn interface_addresses() -> nix::Result<Vec<IpAddr>> {
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        let Some(address) = interface.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            addresses.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            addresses.push(IpAddr::V6(v6.ip()).to_canonical());
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterEndpoint;

    fn here(names: &[&str], addresses: &[&str], loopback: bool) -> ThisHost {
        ThisHost::new(
            names.iter().map(|n| n.to_string()).collect(),
            addresses.iter().map(|a| a.parse().unwrap()).collect(),
            loopback,
        )
    }

    #[test]
    fn names_match_without_case_or_a_trailing_dot() {
        let host = here(&["localhost", "Sensor-1"], &[], true);
        for name in [
            "sensor-1",
            "SENSOR-1",
            "sensor-1.",
            " sensor-1 ",
            "localhost",
            "",
        ] {
            assert!(host.is_here(name), "{name:?}");
        }
        for name in ["sensor-2", "sensor-1.example.org", "sensor", "localhost2"] {
            assert!(!host.is_here(name), "{name:?}");
        }
    }

    #[test]
    fn addresses_match_as_addresses() {
        let host = here(&[], &["192.0.2.2", "fd00::2"], true);
        for name in [
            "192.0.2.2",
            "fd00::2",
            "fd00:0:0::2",
            "[fd00::2]",
            "::ffff:192.0.2.2",
            "127.0.0.1",
            "127.0.0.3",
            "::1",
        ] {
            assert!(host.is_here(name), "{name:?}");
        }
        for name in ["192.0.2.3", "fd00::3", "192.0.2.2:80", "192.000.2.2"] {
            assert!(!host.is_here(name), "{name:?}");
        }
    }

    #[test]
    fn under_host_only_the_names_given_count() {
        let host = ThisHost::named(&["127.0.0.2".into(), "Alpha".into()]);
        assert!(host.is_here("127.0.0.2"));
        assert!(host.is_here("alpha"));
        assert!(host.is_here(""));
        for name in ["127.0.0.3", "127.0.0.1", "localhost", "::1", "beta"] {
            assert!(!host.is_here(name), "{name:?}");
        }
    }

    #[test]
    fn a_node_belongs_where_its_own_endpoint_says() {
        let host = ThisHost::named(&["alpha".into()]);
        let endpoint = |host: &str| ClusterEndpoint {
            host: host.into(),
            ..ClusterEndpoint::default()
        };
        let mut config = NodeConfig::named("w1");
        assert_eq!(host.elsewhere(&config), None, "no layout: local");
        config.cluster.insert("manager".into(), endpoint("beta"));
        assert_eq!(
            host.elsewhere(&config),
            None,
            "no endpoint of its own: local"
        );
        config.cluster.insert("w1".into(), endpoint("alpha"));
        assert_eq!(host.elsewhere(&config), None);
        config.cluster.insert("w1".into(), endpoint("beta"));
        assert_eq!(host.elsewhere(&config), Some("beta"));
        config.cluster.insert("w1".into(), endpoint(""));
        assert_eq!(host.elsewhere(&config), None, "an empty host: local");
    }

    #[test]
    fn the_machine_knows_its_own_name_and_addresses() {
        let host = ThisHost::machine();
        assert!(host.is_here("localhost"));
        assert!(host.is_here("127.0.0.1"));
        let name = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert!(host.is_here(&name), "{name} in {}", host.describe());
        assert!(!host.is_here("no-such-host.invalid"));
        for address in interface_addresses().unwrap() {
            assert!(host.is_here(&address.to_string()), "{address}");
        }
    }
}

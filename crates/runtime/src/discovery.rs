//! How a process reaches the replicas of a peer (docs/adr/0008). One
//! HTTP/2 connection carries every call, so a connection to a Kubernetes
//! Service name pins a caller to one pod until the connection ends. With
//! a refresh interval set, the peer's host name (a headless Service) is
//! resolved periodically, each address gets its own connection, and calls
//! are spread over them (power of two choices); addresses that appear are
//! used from the next refresh on, addresses that vanish are dropped.

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use tonic::transport::{Channel, Endpoint, Uri, channel::Change};

/// Makes an endpoint ready to dial (timeouts, TLS): the same for every
/// address of a peer.
pub type Configure =
    Arc<dyn Fn(Endpoint) -> Result<Endpoint, tonic::transport::Error> + Send + Sync>;

/// A channel to `uri`: balanced over the addresses its host resolves to
/// when `refresh` is set and the host is a name, else one lazy connection.
pub fn channel(
    uri: &Uri,
    configure: Configure,
    refresh: Option<Duration>,
) -> Result<Channel, tonic::transport::Error> {
    let host = uri.host().unwrap_or_default().to_owned();
    let by_name = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_err();
    match refresh {
        Some(every) if by_name => Ok(balanced(uri.clone(), host, configure, every)),
        _ => Ok(configure(Endpoint::from(uri.clone()))?.connect_lazy()),
    }
}

fn balanced(uri: Uri, host: String, configure: Configure, every: Duration) -> Channel {
    let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    tokio::spawn(async move {
        let mut known = BTreeSet::new();
        loop {
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(found) => {
                    let found: BTreeSet<SocketAddr> = found.collect();
                    // An empty answer is a DNS hiccup, not "no pods": keep
                    // calling the addresses known so far.
                    if !found.is_empty() && found != known {
                        for addr in found.difference(&known) {
                            let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
                                .map(|e| e.origin(uri.clone()))
                                .and_then(|e| configure(e));
                            match endpoint {
                                Ok(endpoint) => {
                                    if changes.send(Change::Insert(*addr, endpoint)).await.is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(err) => tracing::warn!(%addr, %err, "peer address unusable"),
                            }
                        }
                        for addr in known.difference(&found) {
                            if changes.send(Change::Remove(*addr)).await.is_err() {
                                return;
                            }
                        }
                        tracing::info!(peer = %host, addresses = ?found, "peer addresses");
                        known = found;
                    }
                }
                Err(err) => tracing::warn!(peer = %host, %err, "resolving a peer failed"),
            }
            tokio::select! {
                () = changes.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    });
    channel
}

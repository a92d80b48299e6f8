//! Spreads calls over every address of a downstream: round robin, as gRPC's own
//! `round_robin` policy does, skipping for a while an address whose connection
//! failed (a pod that died, before the next resolution drops it).
//!
//! Addresses come from the configured targets: IP addresses as they are, host names
//! through DNS, resolved again every `GRPC_CLIENT_DNS_REFRESH`. A Kubernetes
//! *headless* Service resolves to the address of every ready pod, which is what makes
//! this work there; a ClusterIP Service resolves to one virtual address, and HTTP/2's
//! long-lived connections would then pin each caller to one pod.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Target, Upstream, connect_lazy};
use crate::ClientConfig;

/// How long an address whose connection failed is skipped, unless every address is.
pub(crate) const EJECTION: Duration = Duration::from_secs(2);

/// The addresses of one downstream, each with its own lazily connected channel.
#[derive(Debug)]
pub(crate) struct Endpoints {
    backends: RwLock<Vec<Arc<Backend>>>,
    next: AtomicUsize,
    /// Changes when the first resolution is done, so that calls made before it wait.
    resolved: watch::Sender<bool>,
}

/// One address of the downstream.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) channel: tonic::transport::Channel,
    ejected_until: Mutex<Option<Instant>>,
}

impl Backend {
    fn new(addr: SocketAddr, target: &Target, config: &ClientConfig) -> Arc<Self> {
        Arc::new(Self {
            addr,
            channel: connect_lazy(addr, target, config),
            ejected_until: Mutex::new(None),
        })
    }

    fn ejected(&self, now: Instant) -> bool {
        let until = self
            .ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.is_some_and(|until| now < until)
    }
}

impl Endpoints {
    /// The addresses of `upstream`: its IP addresses at once, the addresses of its
    /// host names once a task resolves them (again every `config.dns_refresh`, for as
    /// long as the returned value lives).
    pub(crate) fn new(upstream: &Upstream, config: &ClientConfig) -> Arc<Self> {
        let mut fixed = Vec::new();
        let mut names = Vec::new();
        for target in upstream.targets() {
            match target.host.parse::<IpAddr>() {
                Ok(ip) => fixed.push(Backend::new((ip, target.port).into(), target, config)),
                Err(_) => names.push(target.clone()),
            }
        }
        let endpoints = Arc::new(Self {
            backends: RwLock::new(fixed.clone()),
            next: AtomicUsize::new(0),
            resolved: watch::Sender::new(names.is_empty()),
        });
        if !names.is_empty() {
            let weak = Arc::downgrade(&endpoints);
            tokio::spawn(resolve(weak, fixed, names, config.clone()));
        }
        endpoints
    }

    /// How many addresses there are now.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Backend>>> {
        self.backends.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the host names were resolved once (at once when there are none).
    pub(crate) async fn wait_resolved(&self) {
        let _ = self.resolved.subscribe().wait_for(|done| *done).await;
    }

    /// The next address in turn that is not set aside (any, when all are); `None` if
    /// there is no address at all.
    pub(crate) fn pick(&self, now: Instant) -> Option<Arc<Backend>> {
        let backends = self.read();
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &backends[(start + i) % n])
            .find(|b| !b.ejected(now))
            .or_else(|| backends.get(start % n))
            .cloned()
    }

    /// Sets `backend` aside for [`EJECTION`]: its connection failed.
    pub(crate) fn eject(&self, backend: &Backend, now: Instant) {
        *backend
            .ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now + EJECTION);
    }

    /// Sets the addresses to `fixed` and `resolved`, keeping the channels (and
    /// connections) of those that stay.
    fn replace(
        &self,
        fixed: &[Arc<Backend>],
        resolved: Vec<(SocketAddr, Target)>,
        config: &ClientConfig,
    ) {
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut old: HashMap<SocketAddr, Arc<Backend>> =
            backends.drain(..).map(|b| (b.addr, b)).collect();
        backends.extend(fixed.iter().cloned());
        for (addr, target) in resolved {
            if !backends.iter().any(|b| b.addr == addr) {
                let backend = old.remove(&addr);
                backends.push(backend.unwrap_or_else(|| Backend::new(addr, &target, config)));
            }
        }
        // The same order on every update, so that round robin stays fair.
        backends.sort_by_key(|b| b.addr);
    }
}

/// Resolves `names` now and every `config.dns_refresh`, until the endpoints are gone.
/// A failed resolution keeps the addresses known so far.
async fn resolve(
    endpoints: Weak<Endpoints>,
    fixed: Vec<Arc<Backend>>,
    names: Vec<Target>,
    config: ClientConfig,
) {
    let mut ticker = tokio::time::interval(config.dns_refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut resolved = Vec::new();
        let mut failed = false;
        for target in &names {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(found) => resolved.extend(found.map(|addr| (addr, target.clone()))),
                Err(error) => {
                    failed = true;
                    tracing::warn!(host = %target.host, %error, "resolving an upstream failed; keeping its known addresses");
                }
            }
        }
        let Some(endpoints) = endpoints.upgrade() else {
            return;
        };
        if !failed || !*endpoints.resolved.borrow() {
            endpoints.replace(&fixed, resolved, &config);
        }
        endpoints.resolved.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(addrs: &str) -> Arc<Endpoints> {
        let config = ClientConfig::from_env(&crate::Env::default()).unwrap();
        Endpoints::new(&Upstream::parse(addrs).unwrap(), &config)
    }

    #[tokio::test]
    async fn round_robin_skips_an_ejected_address_until_its_time_is_up() {
        let e = endpoints("http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3");
        let now = Instant::now();
        let ports = |e: &Endpoints, now| -> Vec<u16> {
            (0..6).map(|_| e.pick(now).unwrap().addr.port()).collect()
        };
        assert_eq!(ports(&e, now), [1, 2, 3, 1, 2, 3]);
        let second = e.pick(now).unwrap();
        assert_eq!(second.addr.port(), 1);
        e.eject(&second, now);
        let picked = ports(&e, now);
        assert!(!picked.contains(&1), "{picked:?}");
        assert!(picked.contains(&2) && picked.contains(&3), "{picked:?}");
        assert!(ports(&e, now + EJECTION).contains(&1));
    }

    #[tokio::test]
    async fn when_every_address_is_ejected_they_are_used_anyway() {
        let e = endpoints("http://127.0.0.1:1");
        let now = Instant::now();
        let only = e.pick(now).unwrap();
        e.eject(&only, now);
        assert_eq!(e.pick(now).unwrap().addr, only.addr);
    }

    #[tokio::test]
    async fn host_names_are_resolved_to_every_address() {
        // `localhost` resolves without any network; to one address or two (::1).
        let e = endpoints("http://localhost:7,http://127.0.0.1:8");
        e.wait_resolved().await;
        let addrs: Vec<_> = e.read().iter().map(|b| b.addr).collect();
        assert!(addrs.contains(&"127.0.0.1:7".parse().unwrap()), "{addrs:?}");
        assert!(addrs.contains(&"127.0.0.1:8".parse().unwrap()), "{addrs:?}");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}

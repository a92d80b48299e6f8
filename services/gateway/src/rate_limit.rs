//! A rate limit per client: GCRA (the generic cell rate algorithm), the token bucket
//! expressed as one instant per client, the *theoretical arrival time* (TAT) of its
//! next request.
//!
//! A client may send `burst` requests at once, then one every `1 / rate` seconds. A
//! request at `now` is admitted when `TAT - now <= (burst - 1) / rate`, and then pushes
//! `TAT` to `max(TAT, now) + 1 / rate`; a refused request changes nothing and is told
//! when the next one would be admitted.
//!
//! A client whose `TAT` has passed is in exactly the state of a client never seen, so
//! it can be forgotten at any time without changing any answer: the map keeps only
//! clients that sent a request within the last `burst / rate` seconds, swept whenever
//! it has doubled since the last sweep (memory bounded by the recent request rate,
//! amortised constant time per request).
//!
//! Written here rather than taken from `governor` (its keyed limiter brings `dashmap`,
//! `quanta`, `parking_lot` and a few more into the build, and still needs a task to
//! evict idle keys): these sixty lines are the whole algorithm.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Who a request is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Client {
    /// The `sub` of a valid token.
    Subject(String),
    /// The peer's address: an IPv4 address, or the /64 network of an IPv6 one (one
    /// host usually holds a whole /64, and could otherwise take a new key per request).
    /// `None` when the connection's address is unknown (not served through
    /// `Server::serve`).
    Ip(Option<IpAddr>),
}

impl Client {
    pub(crate) fn peer(ip: Option<IpAddr>) -> Self {
        Self::Ip(ip.map(|ip| match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
        }))
    }

    /// The label of `gateway_rate_limited_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Subject(_) => "subject",
            Self::Ip(_) => "peer_ip",
        }
    }
}

/// The limiter of every client, shared by all connections.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// `1 / rate`: how much of the burst each request uses up.
    interval: Duration,
    /// `(burst - 1) / rate`: how far ahead of now a client's TAT may be.
    tolerance: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tat: HashMap<Client, Instant>,
    /// Sweep the map when it reaches this many clients.
    sweep_at: usize,
}

/// The smallest map size at which sweeping starts.
const MIN_SWEEP: usize = 1024;

impl RateLimiter {
    /// `rate` requests per second (> 0) and bursts of `burst` (≥ 1) per client.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate);
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            state: Mutex::new(State {
                tat: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Admits a request of `client` now, or tells how long until one would be.
    pub(crate) fn check(&self, client: &Client) -> Result<(), Duration> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: &Client, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = state.tat.get(client).map_or(now, |&tat| tat.max(now));
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        // A known client: update in place, without cloning its key.
        match state.tat.get_mut(client) {
            Some(entry) => *entry = tat + self.interval,
            None => {
                state.tat.insert(client.clone(), tat + self.interval);
                if state.tat.len() >= state.sweep_at {
                    state.tat.retain(|_, tat| *tat > now);
                    state.sweep_at = (state.tat.len() * 2).max(MIN_SWEEP);
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.state.lock().unwrap().tat.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> Client {
        Client::Subject(format!("client-{n}"))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.check_at(&client(1), start).unwrap();
        }
        let wait = limiter.check_at(&client(1), start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Others are not affected.
        limiter.check_at(&client(2), start).unwrap();
        // One request per interval after that, not two.
        let later = start + Duration::from_millis(100);
        limiter.check_at(&client(1), later).unwrap();
        assert!(limiter.check_at(&client(1), later).is_err());
        // A full burst again once idle for burst / rate.
        let idle = later + Duration::from_millis(300);
        for _ in 0..3 {
            limiter.check_at(&client(1), idle).unwrap();
        }
        assert!(limiter.check_at(&client(1), idle).is_err());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let limiter = RateLimiter::new(100.0, 1);
        let start = Instant::now();
        for n in 0..MIN_SWEEP as u32 - 1 {
            limiter.check_at(&client(n), start).unwrap();
        }
        assert_eq!(limiter.clients(), MIN_SWEEP - 1);
        // All of them idle for longer than 1 / rate: the next new client sweeps them.
        let later = start + Duration::from_secs(1);
        limiter.check_at(&client(u32::MAX), later).unwrap();
        assert_eq!(limiter.clients(), 1);
    }

    #[test]
    fn ipv6_hosts_count_by_their_64() {
        let a = Client::peer(Some("2001:db8:1:2::1".parse().unwrap()));
        let b = Client::peer(Some("2001:db8:1:2:ffff::9".parse().unwrap()));
        let c = Client::peer(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = Client::peer(Some("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(mapped, Client::peer(Some("10.0.0.1".parse().unwrap())));
    }
}

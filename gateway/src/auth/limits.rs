//! Rate limits of the token endpoint (docs/auth.md, "Accounts and tokens"): guessing an account's
//! secret, or making the gateway hash secrets all day, is slow for everyone.
//!
//! Two keyed limits, both in this gateway's memory (each replica counts on its own): per tenant and
//! client id (ids the tenant does not have share one key, so made-up ids cannot grow the map), and
//! per client IP. Idle keys are forgotten as the map grows.
//!
//! And [`SpentRefreshTokens`]: a refresh token is good for one refresh at this gateway.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Token requests per minute per (tenant, client id), with as large a burst.
pub(crate) const PER_CLIENT_PER_MINUTE: u32 = 10;
/// Token requests per minute per client IP, with as large a burst.
pub(crate) const PER_IP_PER_MINUTE: u32 = 30;
/// Keys kept before idle ones are dropped.
const RETAIN_AT: usize = 4096;

/// Refresh tokens remembered as spent: far more than the rate limits let anyone redeem while
/// one lives (24 h).
pub(crate) const SPENT_CAPACITY: usize = 100_000;

/// The token endpoint's limits.
pub(crate) struct TokenLimits {
    by_client: DefaultKeyedRateLimiter<(String, String)>,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Refresh tokens already redeemed here.
    pub(crate) spent: SpentRefreshTokens,
}

/// The refresh tokens this gateway has redeemed, by SHA-256 (never the token): each is good for one
/// refresh, which returns the next one of the chain. A stolen refresh token that its owner already
/// used is refused, and one the thief uses first is refused to the owner, who signs in again.
///
/// Per replica, in memory: gateways share no state, so with several replicas a token may be
/// redeemed once at each (docs/auth.md#accounts-and-tokens); a changed account secret still ends
/// every chain at every gateway. At most [`SPENT_CAPACITY`] are kept; the rate limits let no one
/// redeem that many in a token's lifetime.
pub(crate) struct SpentRefreshTokens {
    spent: quick_cache::sync::Cache<[u8; 32], ()>,
}

impl SpentRefreshTokens {
    /// Room for `capacity` tokens.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            spent: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Marks `token` spent; `false` when it already was (concurrent redemptions of one token:
    /// exactly one gets `true`).
    pub(crate) fn spend(&self, token: &str) -> bool {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        match self.spent.get_value_or_guard(&key, Some(Duration::from_secs(1))) {
            quick_cache::sync::GuardResult::Guard(g) => g.insert(()).is_ok(),
            quick_cache::sync::GuardResult::Value(()) | quick_cache::sync::GuardResult::Timeout => false,
        }
    }
}

impl Default for TokenLimits {
    fn default() -> Self {
        Self::new(PER_CLIENT_PER_MINUTE, PER_IP_PER_MINUTE)
    }
}

impl TokenLimits {
    /// Limits of `per_client` and `per_ip` requests a minute (0 counts as 1).
    pub(crate) fn new(per_client: u32, per_ip: u32) -> Self {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            by_client: RateLimiter::keyed(quota(per_client)),
            by_ip: RateLimiter::keyed(quota(per_ip)),
            spent: SpentRefreshTokens::new(SPENT_CAPACITY),
        }
    }

    /// Whether a token request of `client` (`known`: an account of `tenant`) from `ip` may go on;
    /// else how long until it may.
    pub(crate) fn check(&self, tenant: &str, client: Option<&str>, known: bool, ip: IpAddr) -> Result<(), Duration> {
        if self.by_ip.len() > RETAIN_AT {
            self.by_ip.retain_recent();
            self.by_ip.shrink_to_fit();
        }
        if self.by_client.len() > RETAIN_AT {
            self.by_client.retain_recent();
            self.by_client.shrink_to_fit();
        }
        let now = DefaultClock::default().now();
        self.by_ip
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(now))?;
        let id = if known { client.unwrap_or_default() } else { "" };
        self.by_client
            .check_key(&(tenant.to_string(), id.to_string()))
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_and_an_ip_get_their_burst_then_wait() {
        let limits = TokenLimits::new(3, 5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.check("acme", Some("alice"), true, ip).is_ok());
        }
        let wait = limits.check("acme", Some("alice"), true, ip).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
        // Another account from the same IP has its own client budget, until the IP's runs out.
        assert!(limits.check("acme", Some("bob"), true, ip).is_ok());
        assert!(
            limits.check("acme", Some("carol"), true, ip).is_err(),
            "the IP's 5 are spent"
        );
        // Another IP, another tenant: fresh.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limits.check("beta", Some("alice"), true, other).is_ok());
    }

    #[test]
    fn a_refresh_token_is_spent_once_even_when_raced() {
        let spent = std::sync::Arc::new(SpentRefreshTokens::new(16));
        assert!(spent.spend("token-a"));
        assert!(!spent.spend("token-a"));
        assert!(spent.spend("token-b"));
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| usize::from(spent.spend("token-c"))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn made_up_client_ids_share_one_budget() {
        let limits = TokenLimits::new(2, 1000);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(limits.check("acme", Some("x1"), false, ip).is_ok());
        assert!(limits.check("acme", Some("x2"), false, ip).is_ok());
        assert!(limits.check("acme", Some("x3"), false, ip).is_err());
        assert_eq!(limits.by_client.len(), 1);
    }
}

//! Leader election on a `coordination.k8s.io` Lease: the replica holding the
//! lease reconciles and manages signing keys; every replica serves HTTP.
//!
//! The holder renews every third of the lease duration. It stops its work
//! once it has failed to renew for two thirds of the duration, before any
//! other replica may take over (after the full duration), so two leaders
//! never write at once. Every request is bounded by that moment: one that
//! hangs cannot keep a leader working. Followers look every sixth of the
//! duration and when the lease they saw would expire. On shutdown the
//! holder releases the lease, so the next leader need not wait.
//!
//! Another replica's clock is never compared with ours: a lease is judged
//! expired when this replica has seen it unchanged for the lease duration
//! by its own monotonic clock (as client-go does), whatever `renewTime`
//! the holder's clock wrote.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::{debug, info, warn};

use crate::watch::Tracker;

/// What to do about a lease, seen at `now`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody has ever held it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// What to do about a lease this replica has seen unchanged for
/// `unchanged_for`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let seconds = spec.lease_duration_seconds.unwrap_or(15).max(1);
            if unchanged_for >= Duration::from_secs(seconds.unsigned_abs().into()) {
                Decision::Acquire
            } else {
                Decision::Follow
            }
        }
    }
}

pub struct Elector {
    pub api: Api<Lease>,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    /// The lease as last seen, and when it last changed, by our clock.
    pub observed: Option<(LeaseSpec, Instant)>,
    /// Failed lease requests, for `/readyz`.
    pub health: Tracker,
    /// Set on the Lease (see [`crate::owner`]).
    pub owner: Option<OwnerReference>,
}

impl Elector {
    /// How long the lease has looked exactly like `spec` to this replica.
    fn unchanged_for(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        match (&self.observed, spec) {
            (Some((seen, at)), Some(spec)) if seen == spec => at.elapsed(),
            _ => {
                self.observed = spec.map(|s| (s.clone(), Instant::now()));
                Duration::ZERO
            }
        }
    }

    /// One round: whether we hold the lease afterwards.
    async fn try_hold(&mut self) -> Result<bool, kube::Error> {
        // Written into the lease only, for people to read; never compared.
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = self.unchanged_for(spec);
        let decision = decide(spec, &self.identity, unchanged_for);
        let spec = |acquired: Option<MicroTime>, transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: acquired,
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match (decision, existing) {
            (Decision::Follow, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        owner_references: self.owner.clone().map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(spec(Some(MicroTime(now)), 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                crate::owner::adopt(&mut lease.metadata, self.owner.as_ref());
                lease.spec = Some(if decision == Decision::Renew {
                    spec(old.acquire_time, transitions)
                } else {
                    spec(Some(MicroTime(now)), transitions + 1)
                });
                // resourceVersion is kept: a concurrent writer makes this 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released leadership"),
            Err(e) => warn!(lease = %self.name, error = %e, "releasing the lease failed"),
        }
    }

    /// How long until the lease, unchanged since this replica last saw it
    /// change, expires.
    fn expires_in(&self) -> Duration {
        match &self.observed {
            Some((_, seen)) => self.duration.saturating_sub(seen.elapsed()),
            None => self.duration,
        }
    }

    /// How long until a leader that last renewed at `last_renewed` stops
    /// its work: two thirds of the lease duration after it.
    fn step_down_in(&self, last_renewed: Instant) -> Duration {
        (self.duration * 2 / 3).saturating_sub(last_renewed.elapsed())
    }

    /// Runs `work` whenever this replica leads, until `shutdown` resolves;
    /// then stops the work and releases the lease.
    pub async fn run(
        mut self,
        work: impl Fn() -> BoxFuture<'static, ()>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut task: Option<tokio::task::JoinHandle<()>> = None;
        let mut last_renewed = Instant::now();
        let step = self.duration / 3;
        loop {
            // A leader's request may hang (an API server whose storage is
            // gone answers after a minute): it must not outlive the moment
            // this replica stops writing.
            let limit = match task {
                Some(_) => step.min(self.step_down_in(last_renewed)),
                None => step,
            };
            let held = tokio::time::timeout(limit, self.try_hold())
                .await
                .unwrap_or(Err(kube::Error::Service("no answer in time".into())));
            match &held {
                Ok(_) => self.health.whole(),
                Err(e) => self.health.failed(e),
            }
            match held {
                Ok(true) => {
                    last_renewed = Instant::now();
                    if task.is_none() {
                        info!(lease = %self.name, identity = %self.identity, "became leader");
                        task = Some(tokio::spawn(work()));
                    }
                }
                Ok(false) => {
                    if task.is_some() {
                        warn!(lease = %self.name, "another replica holds the lease; stepping down");
                        if let Some(t) = task.take() {
                            t.abort();
                        }
                    }
                }
                Err(e) => debug!(lease = %self.name, error = %e, "lease request failed"),
            }
            // Stop writing before anyone else may take over.
            if task.is_some() && self.step_down_in(last_renewed).is_zero() {
                warn!(lease = %self.name, "could not renew the lease in time; stepping down");
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            // A follower looks twice as often as the holder renews, and
            // again the moment the lease it saw would expire: it takes over
            // at most half a renewal interval after the expiry it observes.
            let pause = match task {
                Some(_) => step.min(self.step_down_in(last_renewed)),
                None => (step / 2)
                    .min(self.expires_in())
                    .max(Duration::from_millis(50)),
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => break,
            }
        }
        if let Some(t) = task.take() {
            t.abort();
            let _ = t.await;
            self.release().await;
        }
    }
}

/// This process's identity in the lease: the pod name, or host and pid.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(1_800_000_000 + renewed).unwrap(),
            )),
            ..Default::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", secs(0)), Decision::Create);
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", secs(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", secs(14)),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&held_by("b", 0)), "a", secs(15)),
            Decision::Acquire
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 0)
        };
        assert_eq!(decide(Some(&released), "a", secs(0)), Decision::Acquire);
    }

    /// The holder's clock, minutes off either way, changes nothing: only
    /// how long we have seen the lease unchanged counts.
    #[test]
    fn the_holders_clock_is_never_compared_with_ours() {
        let now = Timestamp::now().as_second() - 1_800_000_000;
        for skew in [-600, 600] {
            let lease = held_by("b", now + skew);
            assert_eq!(decide(Some(&lease), "a", secs(0)), Decision::Follow);
            assert_eq!(decide(Some(&lease), "a", secs(14)), Decision::Follow);
            assert_eq!(decide(Some(&lease), "a", secs(15)), Decision::Acquire);
        }
    }
}

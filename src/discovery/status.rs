//! Ingress status: the addresses where sluice serves, written to
//! `status.loadBalancer.ingress` of our Ingresses (and the Gateway API
//! status, `gateway_status`) by one replica only, the holder
//! of a `coordination.k8s.io/v1` Lease (the same scheme as client-go's leader
//! election: a holder renews; anyone may take a lease not renewed in time).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ObjectRef, Publisher};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Addresses to publish; when empty, the node IPs of the pods `pod_selector` selects.
    pub publish_addresses: Vec<String>,
    pub pod_selector: String,
    /// Where the Lease (and our pods) live.
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease.
    pub identity: String,
    pub retry_period: Duration,
}

/// Takes part in the election and, while leading, keeps the status of our
/// Ingresses up to date.
pub async fn run(
    client: Client,
    options: StatusOptions,
    publisher: Arc<Publisher>,
    leading_flag: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.namespace);
    // What we last wrote, so an unchanged status is not written again.
    let mut written: BTreeMap<ObjectRef, Vec<String>> = BTreeMap::new();
    let mut gateway_written = BTreeMap::new();
    let mut leading = false;
    loop {
        match try_lead(&leases, &options).await {
            Ok(now_leading) => {
                if now_leading != leading {
                    tracing::info!(identity = %options.identity, leading = now_leading, "Ingress status leadership changed");
                    written.clear();
                    gateway_written.clear();
                }
                leading = now_leading;
            }
            Err(error) => {
                tracing::warn!(%error, "leader election failed; will retry");
                leading = false;
            }
        }
        if leading && !leading_flag.swap(true, Ordering::Relaxed) {
            publisher.resend_warnings();
        }
        leading_flag.store(leading, Ordering::Relaxed);
        if leading {
            match write_status(&client, &options, &publisher, &mut written).await {
                Ok(addresses) => {
                    let table = publisher.table.load_full();
                    let statuses = &table.gateway_api;
                    let controller = publisher.gateway_controller();
                    let done = super::gateway_status::write(
                        &client,
                        (statuses, &controller),
                        &addresses,
                        &mut gateway_written,
                    );
                    if let Err(error) = done.await {
                        tracing::warn!(%error, "updating Gateway API status failed; will retry");
                    }
                }
                Err(error) => tracing::warn!(%error, "updating Ingress status failed; will retry"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(options.retry_period) => {}
        }
    }
}

/// Acquires or renews the Lease; returns whether we hold it. A conflicting write
/// (someone else got there first) just means we are not the leader this round.
async fn try_lead(leases: &Api<Lease>, options: &StatusOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let ours = |transitions: i32| LeaseSpec {
        holder_identity: Some(options.identity.clone()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        renew_time: Some(MicroTime(now)),
        acquire_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(mut lease) = leases.get_opt(&options.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(options.lease_name.clone()),
                namespace: Some(options.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ours(0)),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        renewed.0.as_second() + duration < now.as_second()
    });
    let next = if holder == options.identity {
        LeaseSpec {
            acquire_time: spec.acquire_time.clone(),
            ..ours(spec.lease_transitions.unwrap_or(0))
        }
    } else if expired || holder.is_empty() {
        ours(spec.lease_transitions.unwrap_or(0) + 1)
    } else {
        return Ok(false);
    };
    lease.spec = Some(next);
    match leases
        .replace(&options.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes our Ingresses' status; returns the addresses, which Gateways
/// get too.
async fn write_status(
    client: &Client,
    options: &StatusOptions,
    publisher: &Publisher,
    written: &mut BTreeMap<ObjectRef, Vec<String>>,
) -> Result<Vec<String>, kube::Error> {
    let addresses = if options.publish_addresses.is_empty() {
        node_addresses(client, options).await?
    } else {
        options.publish_addresses.clone()
    };
    let ours: BTreeSet<ObjectRef> = publisher.ours().into_iter().collect();
    written.retain(|o, _| ours.contains(o));
    for ingress in ours {
        if written.get(&ingress) == Some(&addresses) {
            continue;
        }
        let entries: Vec<_> = addresses
            .iter()
            .map(|a| match a.parse::<IpAddr>() {
                Ok(_) => json!({"ip": a}),
                Err(_) => json!({"hostname": a}),
            })
            .collect();
        let patch = json!({"status": {"loadBalancer": {"ingress": entries}}});
        let api: Api<Ingress> = Api::namespaced(client.clone(), &ingress.namespace);
        match api
            .patch_status(
                &ingress.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                written.insert(ingress, addresses.clone());
            }
            // Deleted meanwhile: nothing to do.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(addresses)
}

/// The IPs of the nodes running sluice: what an edge tier or DNS points at.
async fn node_addresses(
    client: &Client,
    options: &StatusOptions,
) -> Result<Vec<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &options.namespace);
    let list = pods
        .list(&ListParams::default().labels(&options.pod_selector))
        .await?;
    let ips: BTreeSet<String> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.host_ip.clone())
        .collect();
    Ok(ips.into_iter().collect())
}

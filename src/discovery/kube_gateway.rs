//! Gateway API from the cluster: the kinds as kube resources (so the
//! watchers of `kube` take them like any other), and whether their CRDs
//! are installed. Without them sluice serves Ingresses only and says so
//! once; it never fails for their absence.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};

use super::gateway::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant, GROUP};
use super::kube::{trim_meta, Trim};

macro_rules! gateway_resource {
    ($type:ty, $kind:literal, $plural:literal, $version:literal, $scope:ty) => {
        impl Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        // Only the spec is read: the status sluice writes itself never
        // comes back as a change (it is not deserialized).
        impl Trim for $type {
            fn trim(&mut self) {
                trim_meta(&mut self.metadata);
            }
        }
    };
}

gateway_resource!(
    GatewayClass,
    "GatewayClass",
    "gatewayclasses",
    "v1",
    ClusterResourceScope
);
gateway_resource!(Gateway, "Gateway", "gateways", "v1", NamespaceResourceScope);
gateway_resource!(
    HttpRoute,
    "HTTPRoute",
    "httproutes",
    "v1",
    NamespaceResourceScope
);
gateway_resource!(
    GrpcRoute,
    "GRPCRoute",
    "grpcroutes",
    "v1",
    NamespaceResourceScope
);
// v1beta1: served by every release that has ReferenceGrant, v1 only by the
// newest.
gateway_resource!(
    ReferenceGrant,
    "ReferenceGrant",
    "referencegrants",
    "v1beta1",
    NamespaceResourceScope
);

/// Which Gateway API kinds the cluster serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Installed {
    /// GatewayClass, Gateway and HTTPRoute (`v1`).
    pub routes: bool,
    /// ReferenceGrant (`v1beta1`).
    pub grants: bool,
    /// GRPCRoute (`v1`, since Gateway API 1.1).
    pub grpc_routes: bool,
}

/// Asks the apiserver's discovery which kinds exist, and whether sluice may
/// list them. An error is taken as "not installed": Ingresses are served
/// either way, and a watcher that could never list would keep sluice from
/// ever being ready (a cluster whose CRDs came with another implementation,
/// and whose RBAC for sluice predates Gateway API).
pub async fn installed(client: &Client, namespace: Option<&str>) -> Installed {
    let has = |resources: &Option<Vec<String>>, wanted: &[&str]| {
        resources
            .as_ref()
            .is_some_and(|r| wanted.iter().all(|w| r.iter().any(|n| n == w)))
    };
    let names = |version: &'static str| async move {
        let list = client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
            .ok()?;
        Some(
            list.resources
                .into_iter()
                .map(|r| r.name)
                .collect::<Vec<String>>(),
        )
    };
    let v1 = names("v1").await;
    let routes = has(&v1, &["gatewayclasses", "gateways", "httproutes"]);
    let grants = has(&names("v1beta1").await, &["referencegrants"]);
    let grpc_routes = has(&v1, &["grpcroutes"]);
    let found = Installed {
        routes: routes
            && may_list(Api::<GatewayClass>::all(client.clone())).await
            && may_list(scoped::<Gateway>(client, namespace)).await
            && may_list(scoped::<HttpRoute>(client, namespace)).await,
        grants: grants && may_list(scoped::<ReferenceGrant>(client, namespace)).await,
        grpc_routes: grpc_routes && may_list(scoped::<GrpcRoute>(client, namespace)).await,
    };
    if routes && !found.routes {
        tracing::warn!("Gateway API CRDs are installed but sluice may not list GatewayClasses, Gateways or HTTPRoutes (see deploy/rbac.yaml); serving Ingresses only");
    } else if found.routes {
        tracing::info!(
            reference_grants = found.grants,
            grpc_routes = found.grpc_routes,
            "Gateway API CRDs found; watching GatewayClasses, Gateways and their routes"
        );
    } else {
        tracing::info!(
            "no Gateway API CRDs (gateway.networking.k8s.io/v1); serving Ingresses only"
        );
    }
    found
}

/// The kind in `namespace`, or across all, as the watchers will list it.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Whether one list of the kind succeeds.
async fn may_list<K>(api: Api<K>) -> bool
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().limit(1)).await.is_ok()
}

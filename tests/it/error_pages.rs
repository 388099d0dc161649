//! `custom-http-errors` with `default-backend`, and globally: the listed
//! statuses, from the pod or from sluice itself, are answered by the default
//! backend with ingress-nginx's headers; others pass through.

use crate::support::*;
use http::StatusCode;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

#[tokio::test]
async fn listed_statuses_are_answered_by_the_default_backend() {
    let app = start_upstream("app").await;
    let errors = start_upstream("errors").await;
    let down = start_upstream("down").await;
    down.stop();
    let codes = format!("{NGINX}custom-http-errors");
    let backend = format!("{NGINX}default-backend");
    let yaml = service_yaml("app", &[app.addr])
        + &service_yaml("errors", &[errors.addr])
        + &service_yaml("down", &[down.addr])
        + &ingress_yaml(
            "shop",
            Some("shop.example"),
            &[(&codes, "404,502"), (&backend, "errors")],
            &[("/", "Prefix", "app"), ("/gone", "Prefix", "down")],
        );
    let manifests = Manifests::new();
    manifests.write("apps.yaml", &yaml);
    let sluice = start_sluice(manifests.path(), "").await;
    let http = client();

    // The pod's 404: the error backend answers, told what happened.
    let mut request = get(sluice.http_addr, "shop.example", "/missing/page?q=1");
    request
        .headers_mut()
        .insert("x-fake-status", "404".parse().unwrap());
    request
        .headers_mut()
        .insert("accept", "text/html".parse().unwrap());
    let reply = send(&http, request).await.unwrap();
    assert_eq!(reply.upstream(), "errors", "{}", reply.text());
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "the error backend's status"
    );
    let seen = reply.json();
    assert_eq!(seen["uri"], "/");
    let header = |name: &str| {
        seen["headers"][name][0]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-code"), "404");
    assert_eq!(header("x-format"), "text/html");
    assert_eq!(header("x-original-uri"), "/missing/page?q=1");
    assert_eq!(header("x-namespace"), "default");
    assert_eq!(header("x-ingress-name"), "shop");
    assert_eq!(header("x-service-name"), "app");
    assert_eq!(header("x-service-port"), "80");
    assert_eq!(header("host"), "shop.example");
    assert!(!header("x-request-id").is_empty());

    // sluice's own 502 (the pod refuses connections), answered the same way.
    let reply = send(&http, get(sluice.http_addr, "shop.example", "/gone"))
        .await
        .unwrap();
    assert_eq!(reply.upstream(), "errors", "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-code"][0], "502");
    assert_eq!(reply.json()["headers"]["x-service-name"][0], "down");

    // A status not listed, and a success, pass through.
    let mut request = get(sluice.http_addr, "shop.example", "/x");
    request
        .headers_mut()
        .insert("x-fake-status", "500".parse().unwrap());
    let reply = send(&http, request).await.unwrap();
    assert_eq!(
        (reply.status, reply.upstream()),
        (StatusCode::INTERNAL_SERVER_ERROR, "app".to_owned())
    );
    let reply = send(&http, get(sluice.http_addr, "shop.example", "/x"))
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.upstream()),
        (StatusCode::OK, "app".to_owned())
    );
}

/// The ConfigMap key and the global default backend: every route without
/// its own list; a pod that is down is sluice's 502, answered by it.
#[tokio::test]
async fn global_custom_http_errors_use_the_global_default_backend() {
    let app = start_upstream("app").await;
    let errors = start_upstream("errors").await;
    let yaml = service_yaml("app", &[app.addr])
        + &service_yaml("errors", &[errors.addr])
        + &ingress_yaml(
            "plain",
            Some("plain.example"),
            &[],
            &[("/", "Prefix", "app")],
        );
    let manifests = Manifests::new();
    manifests.write("apps.yaml", &yaml);
    let config = "custom-http-errors: \"502,504\"\ndefault-backend: default/errors:80\n";
    let sluice = start_sluice(manifests.path(), config).await;
    let http = client();
    let reply = send(&http, get(sluice.http_addr, "plain.example", "/"))
        .await
        .unwrap();
    assert_eq!(reply.upstream(), "app");
    app.stop();
    let reply = send(&http, get(sluice.http_addr, "plain.example", "/a"))
        .await
        .unwrap();
    assert_eq!(reply.upstream(), "errors", "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-code"][0], "502");
    assert_eq!(reply.json()["headers"]["x-original-uri"][0], "/a");
}

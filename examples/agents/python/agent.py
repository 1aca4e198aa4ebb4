#!/usr/bin/env python3
"""An example agent in Python: asks kube-jit for a role in one namespace, waits
for the grant, lists pods there with a token minted for the grant identity,
then revokes the grant early and checks the token no longer works.

    pip install -r examples/agents/python/requirements.txt
    KUBECONFIG=agent.kubeconfig python3 examples/agents/python/agent.py \\
        --target-namespace payments --purpose "find why the rollout fails"

The kubeconfig (or the in-cluster ServiceAccount token) authenticates as the
agent's own ServiceAccount, which may only ask (examples/rbac/requester.yaml).
Exit status: 0 done; 1 denied, failed, timed out or any other error.
"""

import argparse
import json
import sys
import time

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

GROUP, VERSION, PLURAL = "kubejit.io", "v1alpha1", "accessrequests"
TERMINAL = {"Denied", "Expired", "Revoked", "Failed"}


class AgentError(Exception):
    """A failure the agent reports in one line and exits 1 for."""


class StillWaiting(AgentError):
    """No decision in time."""


def say(message):
    print(f"agent: {message}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Ask kube-jit for time-boxed access, use it to list pods, give it back")
    p.add_argument("--namespace", default="agents",
                   help="namespace of the agent's ServiceAccount; the AccessRequest is created there")
    p.add_argument("--target-namespace", required=True, help="namespace to read pods in")
    p.add_argument("--role", default="view", help="ClusterRole to ask for")
    p.add_argument("--duration", default="5m", help="how long the grant should last (90s, 15m, 1h30m)")
    p.add_argument("--purpose", required=True,
                   help="why the access is needed; recorded on every object and audit line")
    p.add_argument("--timeout", type=int, default=120, help="seconds to wait for a decision before giving up")
    p.add_argument("--for-agent", default=None,
                   help="ask for this AgentIdentity (in --namespace); one pinned to its workload "
                        "(spec.workload) must be asked from a matching Pod, with the Pod's own token")
    return p.parse_args(argv)


def agent_configuration():
    """KUBECONFIG (or ~/.kube/config), else the in-cluster ServiceAccount token."""
    cfg = client.Configuration()
    try:
        config.load_kube_config(client_configuration=cfg)
    except (ConfigException, FileNotFoundError):
        config.load_incluster_config(client_configuration=cfg)
    return cfg


def grant_configuration(agent_cfg, token):
    """Same server and CA as the agent, but only the grant's bearer token.

    Built fresh rather than copied: a copied configuration keeps the agent's
    credentials (client certificates, and the refresh hook that rewrites the
    bearer token on every call), and calls would be made as the agent.
    """
    cfg = client.Configuration(host=agent_cfg.host)
    cfg.ssl_ca_cert = agent_cfg.ssl_ca_cert
    cfg.verify_ssl = agent_cfg.verify_ssl
    if getattr(agent_cfg, "tls_server_name", None):
        cfg.tls_server_name = agent_cfg.tls_server_name
    # "authorization" with the scheme included works across client versions.
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return cfg


def whoami(api_client):
    """The username the API server sees (what `kubectl auth whoami` asks)."""
    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    return review.status.user_info.username


def explain(request):
    """Reason and message of the condition that decided the phase."""
    status = request.get("status") or {}
    phase = status.get("phase", "Pending")
    wanted = phase if phase in TERMINAL | {"Granted"} else "Approved"
    for c in status.get("conditions") or []:
        if c.get("type") == wanted:
            return f"{c.get('reason')}: {c.get('message')}" if c.get("message") else c.get("reason")
    return "the operator has not answered yet (is kube-jit running?)"


def wait_for_phase(requests, namespace, name, wanted, timeout):
    """Polls the request until its phase is one of `wanted` and returns it;
    raises if it ends otherwise (terminal phases never change) or time runs out."""
    deadline = time.monotonic() + timeout
    interval = 0.1
    while True:
        request = requests.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        phase = (request.get("status") or {}).get("phase", "Pending")
        if phase in wanted:
            return request
        if phase in TERMINAL:
            raise AgentError(f"request {name} ended {phase}: {explain(request)}")
        if time.monotonic() >= deadline:
            raise StillWaiting(f"request {name} is still {phase} after {timeout}s: {explain(request)}")
        # Back off to 2 s: an approval by a person can take minutes.
        time.sleep(interval)
        interval = min(interval * 1.5, 2.0)


def revoke(requests, namespace, name):
    """spec.revoke: true ends the grant now (merge patch; it cannot be undone)."""
    requests.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"revoke": True}})


def list_pods(core, namespace):
    """Lists pods, retrying 403 for a few seconds: the API server's RBAC cache
    can lag the new RoleBinding by a moment after the request turns Granted."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return core.list_namespaced_pod(namespace).items
        except ApiException as e:
            if e.status != 403 or time.monotonic() >= deadline:
                raise AgentError(f"listing pods in {namespace} with the grant token: HTTP {e.status} {e.reason}") from e
            time.sleep(0.1)


def use_grant(agent_api, agent_cfg, granted, target):
    """Mints a token for the grant identity, lists pods with it; returns the grant's API client."""
    sa = granted["status"]["grant"]["serviceAccount"]
    spec = {"expirationSeconds": 600}
    # A grant bound to this Pod (AgentIdentity spec.workload) takes only tokens
    # bound to its Secret, which the operator deletes when the Pod ends.
    bound = granted["status"]["grant"].get("tokenBoundTo")
    if bound:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": bound["kind"], "name": bound["name"]}
    minted = client.CoreV1Api(agent_api).create_namespaced_service_account_token(
        sa["name"], sa["namespace"], body={"spec": spec}
    )
    say("minted a token for the grant identity")
    grant_api = client.ApiClient(grant_configuration(agent_cfg, minted.status.token))
    pods = list_pods(client.CoreV1Api(grant_api), target)
    names = [f"{p.metadata.name} ({p.status.phase if p.status else ''})" for p in pods]
    say(f"{len(pods)} pod(s) in {target}" + (": " + ", ".join(names) if names else ""))
    return grant_api


def confirm_revoked(grant_api, namespace):
    """The grant token must stop working: 403 once the bindings are gone, 401 once the identity is."""
    core = client.CoreV1Api(grant_api)
    deadline = time.monotonic() + 10
    while True:
        try:
            core.list_namespaced_pod(namespace, limit=1)
        except ApiException as e:
            if e.status in (401, 403):
                say(f"confirmed: the grant token can no longer list pods in {namespace} (HTTP {e.status})")
                return
            raise AgentError(f"checking the grant token after revocation: HTTP {e.status} {e.reason}") from e
        if time.monotonic() >= deadline:
            raise AgentError(f"the grant token still lists pods in {namespace} 10s after revocation")
        time.sleep(0.1)


def run(args):
    agent_cfg = agent_configuration()
    agent_api = client.ApiClient(agent_cfg)
    me = whoami(agent_api)
    say(f"authenticated as {me}")

    requests = client.CustomObjectsApi(agent_api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessRequest",
        # generateName: each run gets a fresh request; the spec is immutable anyway.
        "metadata": {"generateName": "agent-"},
        "spec": {
            # Admission refuses a requester other than the authenticated creator.
            "requester": {"user": me},
            "role": {"kind": "ClusterRole", "name": args.role},
            "namespaces": [args.target_namespace],
            "duration": args.duration,
            "purpose": args.purpose,
        },
    }
    if args.for_agent:
        body["spec"]["forAgent"] = args.for_agent
    created = requests.create_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, body)
    name = created["metadata"]["name"]
    purpose = json.dumps(args.purpose, ensure_ascii=False)
    say(f"requested {args.namespace}/{name}: ClusterRole/{args.role} in {args.target_namespace} "
        f"for {args.duration} ({purpose})")

    say(f"waiting up to {args.timeout}s for a decision")
    try:
        granted = wait_for_phase(requests, args.namespace, name, {"Granted"}, args.timeout)
    except StillWaiting:
        # A request that is still pending could be granted after we left:
        # withdraw it so no grant outlives the agent.
        revoke(requests, args.namespace, name)
        say(f"withdrew {name}")
        raise
    grant = granted["status"]["grant"]
    sa = grant["serviceAccount"]
    say(f"granted: grant {grant['id']} as {sa['namespace']}/{sa['name']} until {grant.get('expiresAt')}")

    # Whatever happens with the grant, give it back before exiting.
    try:
        grant_api = use_grant(agent_api, agent_cfg, granted, args.target_namespace)
    finally:
        say(f"revoking {name} early")
        revoke(requests, args.namespace, name)
    # Expired is as good: the grant may have run out while we worked.
    ended = wait_for_phase(requests, args.namespace, name, {"Revoked", "Expired"}, 30)
    say(f"request is {ended['status']['phase']}: {explain(ended)}")
    confirm_revoked(grant_api, args.target_namespace)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except AgentError as e:
        print(f"agent: error: {e}", file=sys.stderr, flush=True)
        return 1
    except ConfigException as e:
        print(f"agent: error: no kubeconfig or in-cluster credentials: {e}", file=sys.stderr, flush=True)
        return 1
    except ApiException as e:
        print(f"agent: error: Kubernetes API: HTTP {e.status} {e.reason}: {e.body}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks deploy/k8s the way `kubectl apply -k` would see it, without kustomize.

Usage: check_k8s.py DEPLOY_K8S_DIR REPO_ROOT

Renders the base kustomization and every overlay under overlays/ (resources,
namespace, labels, images, JSON 6902 patches: the features these
kustomizations use; anything else is refused rather than ignored), validates
every rendered object against the Kubernetes 1.33 and 1.37 schemas with
kubernetes-validate in strict mode (an unknown kind is an error here, not the
CLI's warning), and checks what matters for carto: one coordinator replica
with Recreate and gRPC probes on 7070, an Indexed Job of workers with one GPU
each whose subdomain is the headless Service that selects them, the token from
the Secret everywhere, the shared RWX volume, and the example job files.
Prints every problem and exits 1 if there is any.
"""
import copy
import functools
import os
import re
import sys
import tomllib

import yaml
from kubernetes_validate import utils as kv

# Each validation re-reads the version's definitions (megabytes of JSON): once is enough.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

K8S_VERSIONS = ["1.33.0", "1.37.0"]
NAMESPACE = "carto"
COORD, COORD_SVC, WORKERS, WORKERS_SVC = "carto-coordinator", "carto-coordinator", "carto-worker", "carto-workers"
SECRET, SECRET_KEY, PVC = "carto-token", "token", "carto-shared"
TOKEN_VARS = {"CARTO_TOKEN", "CARTO_USER_TOKEN", "CARTO_WORKER_TOKEN"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "PriorityClass", "RuntimeClass", "CustomResourceDefinition"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}

problems = []


def fail(where, msg):
    problems.append(f"{where}: {msg}")


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- rendering

def json_pointer(path):
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def walk_to(doc, parts, where):
    node = doc
    for p in parts:
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                raise KeyError(f"{where}: no index {p}")
            node = node[int(p)]
        elif isinstance(node, dict):
            if p not in node:
                raise KeyError(f"{where}: no key {p!r}")
            node = node[p]
        else:
            raise KeyError(f"{where}: cannot descend into a scalar at {p!r}")
    return node


def apply_json6902(doc, ops, where):
    """RFC 6902 add/remove/replace/test: the path must exist (add: its parent)."""
    doc = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        w = f"{where} op {i} ({op.get('op')} {op.get('path')})"
        parts = json_pointer(op["path"])
        parent = walk_to(doc, parts[:-1], w)
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            if walk_to(doc, parts, w) != op["value"]:
                raise KeyError(f"{w}: test failed")
        elif kind == "remove":
            walk_to(doc, parts, w)
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind == "replace":
            walk_to(doc, parts, w)
            parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(op["value"])
        elif kind == "add":
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise KeyError(f"{w}: unsupported op")
    return doc


def split_image(image):
    """name, tag-or-digest suffix (with its ':' or '@')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def containers_of(obj):
    """Every container and init container anywhere in obj (as kustomize finds them)."""
    found = []

    def rec(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers") and isinstance(v, list):
                    found.extend(c for c in v if isinstance(c, dict))
                rec(v)
        elif isinstance(node, list):
            for v in node:
                rec(v)

    rec(obj)
    return found


def render(kdir, seen=()):
    """The objects `kubectl apply -k kdir` would apply."""
    kdir = os.path.normpath(kdir)
    if kdir in seen:
        raise ValueError(f"{kdir}: kustomization cycle")
    kfile = os.path.join(kdir, "kustomization.yaml")
    (k,) = load_yaml_docs(kfile)
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(f"{kfile}: this checker does not render {sorted(unknown)}: extend it")
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        fail(kfile, "apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    objs = []
    for res in k.get("resources", []):
        path = os.path.join(kdir, res)
        if os.path.isdir(path):
            objs.extend(render(path, seen + (kdir,)))
        elif os.path.isfile(path):
            objs.extend((path, o) for o in load_yaml_docs(path))
        else:
            fail(kfile, f"resource {res} does not exist")
    ns = k.get("namespace")
    if ns:
        for _, o in objs:
            if o.get("kind") == "Namespace":
                o["metadata"]["name"] = ns
            elif o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns
    for spec in k.get("labels", []):
        pairs = spec.get("pairs", {})
        if spec.get("includeSelectors"):
            raise ValueError(f"{kfile}: labels with includeSelectors are not rendered here")
        for _, o in objs:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if spec.get("includeTemplates") and o.get("kind") in WORKLOADS:
                o["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    for p in k.get("patches", []):
        if "path" not in p or "target" not in p:
            raise ValueError(f"{kfile}: only patches with path and target are rendered here")
        ppath = os.path.join(kdir, p["path"])
        (ops,) = load_yaml_docs(ppath)
        if not isinstance(ops, list):
            raise ValueError(f"{ppath}: only JSON 6902 patches (a list of operations) are rendered here")
        t = p["target"]
        hits = 0
        for i, (src, o) in enumerate(objs):
            group, _, version = o["apiVersion"].rpartition("/")
            if (t.get("kind", o["kind"]) == o["kind"] and t.get("name", o["metadata"]["name"]) == o["metadata"]["name"]
                    and t.get("group", group) == group and t.get("version", version) == version):
                try:
                    objs[i] = (src, apply_json6902(o, ops, ppath))
                except (KeyError, ValueError, IndexError) as e:
                    fail(ppath, f"does not apply: {e}")
                hits += 1
        if hits == 0:
            fail(kfile, f"patch {p['path']} matches no resource ({t})")
    for img in k.get("images", []):
        hits = 0
        for _, o in objs:
            for c in containers_of(o):
                name, suffix = split_image(c.get("image", ""))
                if name == img["name"]:
                    hits += 1
                    if "newTag" in img:
                        suffix = ":" + str(img["newTag"])
                    if "digest" in img:
                        suffix = "@" + img["digest"]
                    c["image"] = img.get("newName", name) + suffix
        if hits == 0:
            fail(kfile, f"images entry {img['name']!r} matches no container image: stale name?")
    return objs


# ------------------------------------------------------------------- checks

def listing(kdir):
    """kustomization.yaml lists every YAML file beside it, and only existing ones."""
    kfile = os.path.join(kdir, "kustomization.yaml")
    (k,) = load_yaml_docs(kfile)
    listed = set()
    for res in k.get("resources", []):
        if not os.path.isdir(os.path.join(kdir, res)):
            listed.add(os.path.normpath(res))
    listed |= {os.path.normpath(p["path"]) for p in k.get("patches", []) if "path" in p}
    present = {f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
    for f in sorted(present - listed):
        fail(kfile, f"{f} is in the directory but not listed (kubectl apply -k would skip it)")
    for f in sorted(listed - present):
        fail(kfile, f"lists {f}, which is not a file in {kdir}")


def validate_schema(label, objs):
    for src, o in objs:
        name = f"{label}: {src}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
        for v in K8S_VERSIONS:
            try:
                kv.validate(o, v, strict=True)
            except kv.ValidationError as e:
                fail(name, f"Kubernetes {v} strict schema: {'.'.join(map(str, e.path))}: {e.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
                fail(name, f"Kubernetes {v}: {e.message}")


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def one(objs, kind, name, label):
    found = [o for _, o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        fail(label, f"expected exactly one {kind} {name}, found {len(found)}")
        return None
    return found[0]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_token(label, objs):
    for _, o in objs:
        for c in containers_of(o):
            w = f"{label}: {o['kind']}/{o['metadata']['name']} container {c.get('name')}"
            args = [str(a) for a in c.get("command", []) + c.get("args", [])]
            for flag in ("--token", "--user-token", "--worker-token"):
                if any(a == flag or a.startswith(flag + "=") for a in args):
                    fail(w, f"passes {flag} on the command line: take it from the Secret through env")
            for name, e in env_of(c).items():
                if name in TOKEN_VARS:
                    ref = e.get("valueFrom", {}).get("secretKeyRef", {})
                    if "value" in e or ref.get("name") != SECRET or ref.get("key") != SECRET_KEY:
                        fail(w, f"{name} must come from secretKeyRef {SECRET}/{SECRET_KEY}")


def check_shared_volume(w, pod, container):
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = [m for m in container.get("volumeMounts", []) if m.get("mountPath") == "/shared"]
    if len(mounts) != 1:
        fail(w, "must mount the shared volume at /shared")
        return
    claim = vols.get(mounts[0]["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
    if claim != PVC:
        fail(w, f"/shared must be the PVC {PVC}, is {claim}")


def check_rendered(label, objs, gpu):
    for _, o in objs:
        md = o["metadata"]
        w = f"{label}: {o['kind']}/{md['name']}"
        if o["kind"] not in CLUSTER_SCOPED and md.get("namespace") != NAMESPACE:
            fail(w, f"namespace is {md.get('namespace')}, not {NAMESPACE}")
        if md.get("labels", {}).get("app.kubernetes.io/part-of") != "carto":
            fail(w, "lacks the common label app.kubernetes.io/part-of: carto")
    check_token(label, objs)

    secret = one(objs, "Secret", SECRET, label)
    if secret and SECRET_KEY not in {**secret.get("data", {}), **secret.get("stringData", {})}:
        fail(f"{label}: Secret/{SECRET}", f"has no key {SECRET_KEY}")
    pvc = one(objs, "PersistentVolumeClaim", PVC, label)
    if pvc and pvc["spec"].get("accessModes") != ["ReadWriteMany"]:
        fail(f"{label}: PersistentVolumeClaim/{PVC}", "must be ReadWriteMany (workers on many nodes share it)")

    # The coordinator.
    dep = one(objs, "Deployment", COORD, label)
    coord_labels = {}
    if dep:
        w = f"{label}: Deployment/{COORD}"
        spec = dep["spec"]
        if spec.get("replicas") != 1:
            fail(w, f"replicas must be exactly 1 (it holds job state), is {spec.get('replicas')}")
        if spec.get("strategy", {}).get("type") != "Recreate":
            fail(w, "strategy must be Recreate (never two coordinators on one state dir)")
        pod = spec["template"]["spec"]
        coord_labels = spec["template"]["metadata"].get("labels", {})
        if not selects(spec["selector"].get("matchLabels", {}), coord_labels):
            fail(w, "selector does not match its pod template")
        cs = pod["containers"]
        if len(cs) != 1:
            fail(w, "expected one container")
        c = cs[0]
        args = [str(a) for a in c.get("command", []) + c.get("args", [])]
        if "serve" not in args:
            fail(w, "does not run `carto serve`")
        for flag, value in (("--listen", "0.0.0.0:7070"), ("--state-dir", "/shared/carto/state")):
            if flag not in args or args.index(flag) + 1 >= len(args) or args[args.index(flag) + 1] != value:
                fail(w, f"must run with {flag} {value}")
        ports = [p for p in c.get("ports", []) if p.get("containerPort") == 7070]
        if len(ports) != 1 or ports[0].get("name") != "grpc":
            fail(w, "container port 7070 must be declared, named grpc")
        for probe in ("livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if not p or "grpc" not in p or p["grpc"].get("port") != 7070:
                fail(w, f"{probe} must be a native grpc probe on port 7070")
        if "startupProbe" in c and c["startupProbe"].get("grpc", {}).get("port") != 7070:
            fail(w, "startupProbe must be a grpc probe on port 7070")
        req = c.get("resources", {}).get("requests", {})
        if "cpu" not in req or "memory" not in req:
            fail(w, "must request cpu and memory")
        if "CARTO_TOKEN" not in env_of(c) and not {"CARTO_USER_TOKEN", "CARTO_WORKER_TOKEN"} <= set(env_of(c)):
            fail(w, "must get its token from the Secret (CARTO_TOKEN)")
        check_shared_volume(w, pod, c)

    svc = one(objs, "Service", COORD_SVC, label)
    if svc:
        w = f"{label}: Service/{COORD_SVC}"
        if svc["spec"].get("type", "ClusterIP") != "ClusterIP" or svc["spec"].get("clusterIP") == "None":
            fail(w, "must be a ClusterIP Service")
        if [p.get("port") for p in svc["spec"].get("ports", [])] != [7070]:
            fail(w, "must expose port 7070")
        if not selects(svc["spec"].get("selector", {}), coord_labels):
            fail(w, "does not select the coordinator's pods")

    # The workers.
    job = one(objs, "Job", WORKERS, label)
    hl = one(objs, "Service", WORKERS_SVC, label)
    worker_labels = {}
    if job:
        w = f"{label}: Job/{WORKERS}"
        spec = job["spec"]
        if spec.get("completionMode") != "Indexed":
            fail(w, "completionMode must be Indexed")
        if not spec.get("parallelism") or spec.get("parallelism") != spec.get("completions"):
            fail(w, "parallelism and completions must be equal (every worker runs at once)")
        pod = spec["template"]["spec"]
        worker_labels = spec["template"]["metadata"].get("labels", {})
        if pod.get("subdomain") != WORKERS_SVC:
            fail(w, f"subdomain must be the headless Service {WORKERS_SVC}, is {pod.get('subdomain')}")
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            fail(w, "restartPolicy must be Never or OnFailure")
        if "backoffLimit" not in spec and "backoffLimitPerIndex" not in spec:
            fail(w, "set backoffLimit or backoffLimitPerIndex (the default 6 is job-wide)")
        cs = pod["containers"]
        if len(cs) != 1:
            fail(w, "expected one container")
        c = cs[0]
        args = [str(a) for a in c.get("command", []) + c.get("args", [])]
        if "carto-worker" not in args:
            fail(w, "does not run carto-worker")
        device = args[args.index("--device") + 1] if "--device" in args[:-1] else "cpu"
        res = c.get("resources", {})
        gpus = (res.get("limits", {}).get("nvidia.com/gpu"), res.get("requests", {}).get("nvidia.com/gpu"))
        if gpu:
            if gpus[0] != 1 or gpus[1] not in (None, 1):
                fail(w, f"each worker pod must request nvidia.com/gpu: 1 (limits, requests: {gpus})")
            if device != "cuda":
                fail(w, f"GPU workers must run --device cuda, run {device}")
        else:
            if gpus != (None, None):
                fail(w, "CPU workers must not request GPUs")
            if device != "cpu":
                fail(w, f"CPU workers must run --device cpu, run {device}")
        env = env_of(c)
        url = env.get("CARTO_COORDINATOR", {}).get("value", "")
        if not re.fullmatch(rf"http://{COORD_SVC}(\.{NAMESPACE}(\.svc(\.cluster\.local)?)?)?:7070", url):
            fail(w, f"CARTO_COORDINATOR must be the coordinator Service on 7070, is {url!r}")
        adv = env.get("CARTO_ADVERTISE_HOST", {})
        adv_ok = adv.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP" or (
            f".{WORKERS_SVC}." in adv.get("value", ""))
        if not adv_ok:
            fail(w, "CARTO_ADVERTISE_HOST must be the pod IP (status.podIP) or its name under the headless Service")
        if "CARTO_TOKEN" not in env:
            fail(w, "must get its token from the Secret (CARTO_TOKEN)")
        check_shared_volume(w, pod, c)
        image = c.get("image", "")
        want = "carto-gpu" if gpu else "carto-cpu"
        if not split_image(image)[0].endswith("/" + want) and split_image(image)[0] != want:
            fail(w, f"image {image} is not the {want} image")
    if hl:
        w = f"{label}: Service/{WORKERS_SVC}"
        if hl["spec"].get("clusterIP") != "None":
            fail(w, "must be headless (clusterIP: None)")
        if hl["spec"].get("publishNotReadyAddresses") is not True:
            fail(w, "must set publishNotReadyAddresses: true (peers meet before anything is ready)")
        sel = hl["spec"].get("selector", {})
        if not selects(sel, worker_labels):
            fail(w, f"selector {sel} does not select the worker pods' labels {worker_labels}")
        if selects(sel, coord_labels):
            fail(w, "selector also selects the coordinator")
    return job


def check_job_files(examples, spec_rs, jobs):
    """Example JOB.toml files: known fields, absolute paths on /shared, fit the pool."""
    src = open(spec_rs).read()
    body = src[src.index("pub struct JobSpec {"):]
    body = body[:body.index("\n}")]
    fields = set(re.findall(r"^\s*pub (\w+):", body, re.M))
    if not fields:
        fail(spec_rs, "found no JobSpec fields")
    names = sorted(f for f in os.listdir(examples) if f.endswith(".toml"))
    if not names:
        fail(examples, "no example job files")
    for f in names:
        w = os.path.join(examples, f)
        with open(w, "rb") as fh:
            job = tomllib.load(fh)
        for key in sorted(set(job) - fields):
            fail(w, f"unknown field {key} (JobSpec has {sorted(fields)})")
        for key in ("data", "out"):
            if not str(job.get(key, "")).startswith("/shared/"):
                fail(w, f"{key} must be an absolute path on the shared volume (/shared/...)")
        device = job.get("device", "cpu")
        pool = jobs["gpu" if device == "cuda" else "cpu"]
        if pool and job.get("workers", 1) > pool["spec"]["parallelism"]:
            fail(w, f"asks for {job.get('workers')} workers, the Job runs {pool['spec']['parallelism']}")


def main():
    kdir, root = sys.argv[1], sys.argv[2]
    overlays_dir = os.path.join(kdir, "overlays")
    overlays = sorted(os.path.join(overlays_dir, d) for d in os.listdir(overlays_dir)) if os.path.isdir(overlays_dir) else []
    jobs = {"gpu": None, "cpu": None}
    for d in [kdir] + overlays:
        label = os.path.relpath(d, kdir) if d != kdir else "base"
        listing(d)
        try:
            objs = render(d)
        except (ValueError, KeyError) as e:
            fail(label, f"cannot render: {e}")
            continue
        validate_schema(label, objs)
        gpu = label == "base" or "gpu" in label
        job = check_rendered(label, objs, gpu)
        jobs["gpu" if gpu else "cpu"] = jobs["gpu" if gpu else "cpu"] or job
        print(f"{label}: {len(objs)} objects rendered and checked")
    check_job_files(os.path.join(kdir, "examples"), os.path.join(root, "common/src/spec.rs"), jobs)
    for p in problems:
        print("PROBLEM", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

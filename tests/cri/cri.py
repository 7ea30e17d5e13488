# SPDX-License-Identifier: MIT OR GPL-2.0-only
"""A CRI v1 client for netd's containerd test: the calls a kubelet makes
for a pod (RunPodSandbox, CreateContainer, StartContainer, PodSandboxStatus,
StopPodSandbox, RemovePodSandbox), over containerd's gRPC socket, plus an
OCI image archive builder so that the test needs no registry.

    cri.py GENDIR SOCKET CALL JSON     one call; prints the answer as JSON
    cri.py image ROOTFS_TAR NAME OUT ENTRYPOINT...
                                       an OCI archive `ctr images import` takes

GENDIR holds runtime_v1_pb2.py, which the test generates with protoc from
runtime_v1.proto beside this file. A failed call prints its gRPC status and
message on stderr and exits with 1. Run by Debian's python3 (python3-grpcio,
python3-protobuf).
"""

import hashlib
import io
import json
import sys
import tarfile


def image(rootfs_tar, name, out, entrypoint):
    """Writes an OCI image layout as a tar, one layer, tagged NAME, whose
    containers run ENTRYPOINT unless told otherwise."""
    with open(rootfs_tar, "rb") as f:
        layer = f.read()
    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "WorkingDir": "/", "Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = blob(
        json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(
        json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_desc["annotations"] = {"io.containerd.image.name": name}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    with tarfile.open(out, "w") as tar:

        def add(path, data):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":", 1)[1], data)


def call(gendir, socket, name, request):
    sys.path.insert(0, gendir)
    import grpc
    from google.protobuf import json_format

    import runtime_v1_pb2 as api

    request_type = getattr(api, name + "Request")
    response_type = getattr(api, name + "Response")
    channel = grpc.insecure_channel("unix://" + socket)
    method = channel.unary_unary(
        "/runtime.v1.RuntimeService/" + name,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    message = json_format.ParseDict(request, request_type())
    try:
        answer = method(message, timeout=120)
    except grpc.RpcError as err:
        print(f"{name}: {err.code().name}: {err.details()}", file=sys.stderr)
        sys.exit(1)
    print(
        json.dumps(
            json_format.MessageToDict(answer, preserving_proto_field_name=True)
        )
    )


def main():
    if sys.argv[1] == "image":
        image(*sys.argv[2:5], sys.argv[5:])
    else:
        gendir, socket, name, request = sys.argv[1:5]
        call(gendir, socket, name, json.loads(request))


if __name__ == "__main__":
    main()

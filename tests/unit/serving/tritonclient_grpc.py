"""NVIDIA's `tritonclient.grpc` against a V2 gRPC server, as a script: `python tritonclient_grpc.py ADDRESS` with
`{"model": NAME, "inputs": [V2 JSON tensors]}` on stdin; prints server metadata, model metadata and the outputs
of one infer with raw inputs (tritonclient's default), read with `as_numpy`, as JSON.

A separate process because tritonclient's protos and KServe's both declare `package inference`: protobuf refuses
the second set of the same names in one process, and the tests' process holds KServe's.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton

DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


def main(address: str, request: dict) -> dict:
    client = triton.InferenceServerClient(address)
    try:
        server = client.get_server_metadata(as_json=True)
        model = client.get_model_metadata(request["model"], as_json=True)
        inputs = []
        for tensor in request["inputs"]:
            if tensor["datatype"] == "BYTES":
                array = np.array([str(v).encode() for v in tensor["data"]], dtype=object)
            else:
                array = np.array(tensor["data"], dtype=DTYPES[tensor["datatype"]])
            infer_input = triton.InferInput(tensor["name"], tensor["shape"], tensor["datatype"])
            infer_input.set_data_from_numpy(array.reshape(tensor["shape"]))
            inputs.append(infer_input)
        result = client.infer(request["model"], inputs)
        answer = result.get_response(as_json=True)
        outputs = {}
        for output in answer["outputs"]:
            array = result.as_numpy(output["name"])
            values = [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
            outputs[output["name"]] = {"shape": list(array.shape), "data": values}
        return {"server": server, "model": model, "outputs": outputs, "raw": len(answer.get("raw_output_contents", []))}
    finally:
        client.close()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.load(sys.stdin))))

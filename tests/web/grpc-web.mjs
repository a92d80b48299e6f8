// One gRPC-Web call made the way a browser or Node program makes it, with Connect's
// gRPC-Web transport: messages are built from the descriptor set at run time (no code
// generation) and printed in the proto3 JSON mapping, one JSON line on stdout:
//   {"messages": [...]}                    the answers (one for a unary call), or
//   {"error": {"code", "message", "details"}}  the status (Connect's codes are gRPC's).
//
// Usage: node grpc-web.mjs DESCRIPTOR_SET BASE_URL HTTP_VERSION SERVICE METHOD REQUEST_JSON
//   e.g. node grpc-web.mjs fds.bin http://127.0.0.1:50052 2 inventory.v1.InventoryService
//        GetProduct '{"sku": "SKU-005"}'
// Run by tests/acceptance (the gRPC-Web tests); scripts/tools.sh installs the packages.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary, fromJson, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

const [descriptorSet, baseUrl, httpVersion, serviceName, methodName, requestJson] =
  process.argv.slice(2);
if (requestJson === undefined) {
  console.error("usage: grpc-web.mjs DESCRIPTOR_SET BASE_URL HTTP_VERSION SERVICE METHOD REQUEST_JSON");
  process.exit(2);
}

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)),
);
const service = registry.getService(serviceName);
if (service === undefined) throw new Error(`no service ${serviceName} in ${descriptorSet}`);
const method = service.methods.find((m) => m.name === methodName);
if (method === undefined) throw new Error(`no method ${methodName} in ${serviceName}`);

const transport = createGrpcWebTransport({ baseUrl, httpVersion });
const client = createClient(service, transport);
const request = fromJson(method.input, JSON.parse(requestJson), { registry });
const json = (message) => toJson(method.output, message, { registry });

let result;
try {
  const messages = [];
  if (method.methodKind === "unary") {
    messages.push(json(await client[method.localName](request, { timeoutMs: 10_000 })));
  } else if (method.methodKind === "server_streaming") {
    for await (const message of client[method.localName](request, { timeoutMs: 10_000 })) {
      messages.push(json(message));
    }
  } else {
    throw new Error(`${methodName} is ${method.methodKind}: gRPC-Web has unary and server streaming only`);
  }
  result = { messages };
} catch (e) {
  if (!(e instanceof ConnectError)) throw e;
  const details = e.details.map((d) => ("desc" in d ? d.desc.typeName : d.type));
  result = { error: { code: e.code, message: e.rawMessage, details } };
}
console.log(JSON.stringify(result));

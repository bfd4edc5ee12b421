// Checks Gateway API objects (and the CiliumNetworkPolicy that admits Cilium's Gateway) against
// their published schemas, offline: the validators that @kubernetes-models/gateway-api and
// @kubernetes-models/cilium generate from the APIs' Go types (types, enums, patterns, lengths,
// required fields).
//
// Those validators accept fields the schema does not define, which the API server would drop
// or, under kubectl's default strict field validation, refuse. So every field of the object is
// also probed: its value is swapped for one of the wrong type, and a field the schema knows
// must then fail at exactly its own path.
//
// Reads a JSON array of objects on stdin; prints a JSON array with a list of errors for each.

import { validate as validateHTTPRoute } from "@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute";
import { validate as validateCiliumNetworkPolicy } from "@kubernetes-models/cilium/_schemas/ComGithubCiliumCiliumPkgK8sApisCiliumIoV2CiliumNetworkPolicy";

const VALIDATORS = {
  "gateway.networking.k8s.io/v1/HTTPRoute": validateHTTPRoute,
  "cilium.io/v2/CiliumNetworkPolicy": validateCiliumNetworkPolicy,
};

function schemaErrors(validate, object) {
  if (validate(object)) return [];
  return validate.errors.map(
    (error) => `${error.instancePath || "(top level)"}: ${error.keyword} ${JSON.stringify(error.params)}`,
  );
}

function* fieldPaths(value, path = []) {
  if (Array.isArray(value)) {
    for (const [index, item] of value.entries()) yield* fieldPaths(item, [...path, index]);
  } else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      yield [...path, key];
      yield* fieldPaths(item, [...path, key]);
    }
  }
}

function withValueAt(object, path, value) {
  const copy = structuredClone(object);
  let parent = copy;
  for (const key of path.slice(0, -1)) parent = parent[key];
  parent[path.at(-1)] = value;
  return copy;
}

function wrongTypeFor(value) {
  return value !== null && typeof value === "object" ? 12345 : { probe: [] };
}

function unknownFields(validate, object) {
  const unknown = [];
  for (const path of fieldPaths(object)) {
    const pointer = path.map((key) => `/${String(key).replaceAll("~", "~0").replaceAll("/", "~1")}`).join("");
    if (unknown.some((field) => pointer.startsWith(`${field}/`))) continue;
    const original = path.reduce((node, key) => node[key], object);
    validate(withValueAt(object, path, wrongTypeFor(original)));
    const noticed = (validate.errors ?? []).some((error) => error.instancePath === pointer);
    if (!noticed) unknown.push(pointer);
  }
  return unknown;
}

function check(object) {
  const validate = VALIDATORS[`${object.apiVersion}/${object.kind}`];
  if (!validate) return [`no schema for ${object.apiVersion} ${object.kind}`];
  const errors = schemaErrors(validate, object);
  if (errors.length > 0) return errors;
  return unknownFields(validate, object).map((pointer) => `${pointer}: not a field of the schema`);
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
console.log(JSON.stringify(JSON.parse(input).map(check)));

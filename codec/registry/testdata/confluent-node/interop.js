// Confluent's own serializers for Node.js (@confluentinc/schemaregistry),
// driven by the Go tests of codec/registry (node_test.go) to check the wire
// format both ways against the tests' in-process registry.
//
//   node interop.js <request.json
//
// The request is one JSON object:
//   {"op": "serialize" | "deserialize", "kind": "avro" | "protobuf" | "json",
//    "url": registry URL, "topic": topic,
//    "value": the object to serialize (serialize),
//    "payload": base64 bytes (deserialize),
//    "descriptor": base64 FileDescriptorProto, "message": full message name (protobuf serialize)}
// The answer, on stdout, is {"payload": base64} or {"value": object}; on
// failure the process exits 1 with the error on stderr.
'use strict';

const {
  SchemaRegistryClient, SerdeType,
  AvroSerializer, AvroDeserializer,
  ProtobufSerializer, ProtobufDeserializer,
  JsonSerializer, JsonDeserializer,
} = require('@confluentinc/schemaregistry');
const { createFileRegistry, fromBinary, create } = require('@bufbuild/protobuf');
const { FileDescriptorProtoSchema } = require('@bufbuild/protobuf/wkt');

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function main() {
  const req = await readStdin();
  const client = new SchemaRegistryClient({ baseURLs: [req.url] });
  // The Go side registered the schemas: write with the subject's latest.
  const conf = { useLatestVersion: true, autoRegisterSchemas: false };
  // The JSON serdes hand their configuration to ajv, which knows no
  // formats of its own (ajv-formats is not a dependency): give it the one
  // the tests' schemas use.
  const ajvFormats = { formats: { email: /^[^\s@]+@[^\s@]+\.[^\s@]+$/ } };
  if (req.op === 'serialize') {
    let ser, value = req.value;
    switch (req.kind) {
      case 'avro':
        ser = new AvroSerializer(client, SerdeType.VALUE, conf);
        break;
      case 'json':
        ser = new JsonSerializer(client, SerdeType.VALUE, { ...conf, ...ajvFormats, validate: true });
        break;
      case 'protobuf': {
        const fd = fromBinary(FileDescriptorProtoSchema, Buffer.from(req.descriptor, 'base64'));
        const registry = createFileRegistry(fd, () => undefined);
        const desc = registry.getMessage(req.message);
        if (!desc) throw new Error('no message ' + req.message + ' in the descriptor');
        value = create(desc, req.value);
        ser = new ProtobufSerializer(client, SerdeType.VALUE, { ...conf, registry });
        break;
      }
      default:
        throw new Error('unknown kind ' + req.kind);
    }
    const payload = await ser.serialize(req.topic, value);
    process.stdout.write(JSON.stringify({ payload: payload.toString('base64') }));
    return;
  }
  let de;
  switch (req.kind) {
    case 'avro': de = new AvroDeserializer(client, SerdeType.VALUE, {}); break;
    case 'json': de = new JsonDeserializer(client, SerdeType.VALUE, { ...ajvFormats, validate: true }); break;
    case 'protobuf': de = new ProtobufDeserializer(client, SerdeType.VALUE, {}); break;
    default: throw new Error('unknown kind ' + req.kind);
  }
  const value = await de.deserialize(req.topic, Buffer.from(req.payload, 'base64'));
  process.stdout.write(JSON.stringify({ value }, (k, v) => {
    if (typeof v === 'bigint') return v.toString();
    if (k === '$unknown') return undefined;
    return v;
  }));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});

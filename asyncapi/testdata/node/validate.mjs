// Validates AsyncAPI documents with the official parser (@asyncapi/parser),
// as the Go tests of package asyncapi and the dispytch CLI use it:
//
//   node validate.mjs FILE...
//
// It prints one JSON line per file: {"file", "ok", "diagnostics": [...]}, and
// exits 1 when any document has an error or a warning (severity 0 or 1).
// Information and hints (such as "3.0.0 is not the latest version") are
// printed and do not fail.
import { readFile } from 'node:fs/promises';
import { Parser } from '@asyncapi/parser';
import { AvroSchemaParser } from '@asyncapi/avro-schema-parser';

const severities = ['error', 'warning', 'information', 'hint'];
const parser = new Parser();
parser.registerSchemaParser(AvroSchemaParser());

let failed = false;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const diags = diagnostics.map((d) => ({
    severity: severities[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join('/'),
  }));
  const ok = document !== undefined && !diagnostics.some((d) => d.severity <= 1);
  if (!ok) failed = true;
  const summary = {};
  if (document) {
    summary.version = document.version();
    summary.channels = document.channels().all().map((c) => c.id()).sort();
    summary.operations = document.operations().all().map((o) => o.id()).sort();
    summary.messages = document.messages().all().map((m) => m.id()).sort();
  }
  console.log(JSON.stringify({ file, ok, diagnostics: diags, summary }));
}
process.exit(failed ? 1 : 0);

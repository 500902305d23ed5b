// OUT/datamap.html's entry: the map's data rides in the file.
//   #carto-meta  JSON: the map's metadata (see map.js)
//   #carto-data  base64 of the column buffer
//   #carto-text  JSON array: each point's text (or [])
//   #carto-ids   JSON array: each point's id as text (or [])
// Everything runs offline from the file.
import { mountMap, showError } from './map.js';

const $ = (id) => document.getElementById(id);

async function main() {
  const meta = JSON.parse($('carto-meta').textContent);
  const b64 = $('carto-data').textContent.trim();
  const buf = await (await fetch('data:application/octet-stream;base64,' + b64)).arrayBuffer();
  await mountMap({
    meta,
    buf,
    texts: JSON.parse($('carto-text').textContent),
    ids: JSON.parse($('carto-ids').textContent),
  });
}

main().catch(showError);

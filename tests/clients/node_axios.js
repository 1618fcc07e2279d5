// axios with an https.Agent carrying the client certificate, as in the
// seed example. Usage: node node_axios.js URL CERT KEY CA
const fs = require('fs');
const https = require('https');
const axios = require('axios');

async function main() {
  const [url, certFile, keyFile, caFile] = process.argv.slice(2);
  const httpsAgent = new https.Agent({
    cert: fs.readFileSync(certFile),
    key: fs.readFileSync(keyFile),
    ca: fs.readFileSync(caFile),
    rejectUnauthorized: true,
  });
  const response = await axios.get(url, { httpsAgent, headers: { 'Content-Type': 'application/json' } });
  console.log(`status=${response.status}`);
  console.log(response.data);
}

main().catch((error) => {
  console.error(`request failed: ${error.code || ''} ${error.message}`);
  process.exit(1);
});

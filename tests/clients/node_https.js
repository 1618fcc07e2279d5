// A Node.js mTLS client written the way users write one: the https module
// with key, cert and ca. Usage: node node_https.js URL CERT KEY CA
const fs = require('fs');
const https = require('https');

const [url, certFile, keyFile, caFile] = process.argv.slice(2);
const req = https.request(url, {
  method: 'GET',
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
  ca: fs.readFileSync(caFile),
  rejectUnauthorized: true,
}, (res) => {
  let body = '';
  res.on('data', (chunk) => { body += chunk; });
  res.on('end', () => {
    console.log(`status=${res.statusCode}`);
    console.log(body);
  });
});
req.on('error', (err) => {
  console.error(`request failed: ${err.code || ''} ${err.message}`);
  process.exit(1);
});
req.end();

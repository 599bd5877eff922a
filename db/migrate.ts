import { loadConfig } from '../temporal/config.js';
import { closeDb, createDb, migrateDb } from './client.js';

// `npm run db:migrate`: applies committed drizzle-kit migrations to DATABASE_URL.
const config = loadConfig();
if (!config.DATABASE_URL) {
  console.error('DATABASE_URL is not set (npm start migrates its embedded PGlite by itself)');
  process.exit(2);
}
const db = createDb(config.DATABASE_URL, { max: 1 });
await migrateDb(db);
await closeDb(db);
console.log('migrations applied');

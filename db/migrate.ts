import { closeDb, createDb, migrateDb } from './client.js';

// `npm run db:migrate`: applies committed drizzle-kit migrations to DATABASE_URL.
// Reads the one variable it needs itself: db/ imports nothing else of ours.
const url = process.env.DATABASE_URL;
if (!url) {
  console.error('DATABASE_URL is not set (npm start migrates its embedded PGlite by itself)');
  process.exit(2);
}
const db = createDb(url, { max: 1 });
await migrateDb(db);
await closeDb(db);
console.log('migrations applied');

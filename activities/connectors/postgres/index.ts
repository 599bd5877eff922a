export {
  MAX_ROLE_NAME_BYTES,
  classifyPostgresError,
  createPostgresConnector,
  postgresAccountFor,
  postgresSystemConfigSchema,
  quoteIdent,
  sqlState,
  validateRoleName,
  type PostgresSecrets,
  type PostgresSystemConfig,
  type PostgresSystemConfigInput,
} from './connector.js';

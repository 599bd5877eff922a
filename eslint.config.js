import tseslint from 'typescript-eslint';

// The one lint rule that matters most: workflow code runs in Temporal's deterministic
// sandbox, so workflows/** may import only @temporalio/workflow, other workflow files,
// and types from elsewhere (DESIGN §2).
export default tseslint.config(
  { ignores: ['node_modules/**', '.data/**', 'db/migrations/**', 'coverage/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tseslint.parser },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'off',
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!@temporalio/workflow$|\\./)',
              message: 'workflows/ may import only @temporalio/workflow and other workflow files (use `import type` for anything else).',
              allowTypeImports: true,
            },
          ],
        },
      ],
    },
  },
);

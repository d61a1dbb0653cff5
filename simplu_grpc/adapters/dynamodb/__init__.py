"""DynamoDB: the business-info table (store, item mapping, item migrations); boto3 lives only here."""

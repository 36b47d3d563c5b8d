terraform {
  required_providers {
    tandem = {
      source = "tandem/tandem"
    }
  }
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title NoxTestToken
/// @notice A plain ERC-20 staking token for local networks and tests. Production
///         deployments point NoxRegistry at a real token instead.
contract NoxTestToken is ERC20, Ownable {
    /// @param initialSupply Minted to the deployer.
    constructor(uint256 initialSupply) ERC20("NOX Test Stake", "tNOX") Ownable(msg.sender) {
        _mint(msg.sender, initialSupply);
    }

    /// @notice Mints `amount` to `to`. Owner only.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
